-- Source Info Mart schema (PostgreSQL) for the tables gim-export simulates and exports.
-- Written from the public Genesys Info Mart physical data model (see shared GIM.md); a subset of the
-- real schema with its real column names and types. Idempotent: CREATE ... IF NOT EXISTS.

CREATE TABLE IF NOT EXISTS ctl_audit_log (
    audit_key               numeric(19)   NOT NULL PRIMARY KEY,
    job_id                  varchar(64)   NOT NULL,
    created                 timestamp(3)  NOT NULL,
    inserted                timestamp(3),
    processing_status_key   integer       NOT NULL,
    min_start_date_time_key integer       NOT NULL,
    max_start_date_time_key integer       NOT NULL,
    max_chunk_ts            integer,
    data_source_key         integer,
    row_count               integer,
    created_ts              integer       NOT NULL
);

CREATE TABLE IF NOT EXISTS date_time (
    date_time_key           integer       NOT NULL PRIMARY KEY,
    cal_date                timestamp,
    label_yyyy_mm_dd        varchar(10),
    label_hh24              varchar(2),
    cal_year_num            integer,
    cal_month_num           integer,
    cal_day_num_in_month    integer,
    cal_hour_24_num         integer,
    cal_minute_num          integer,
    day_name                varchar(16),
    create_audit_key        numeric(19)   NOT NULL,
    update_audit_key        numeric(19)   NOT NULL
);

CREATE TABLE IF NOT EXISTS tenant (
    tenant_key              integer       NOT NULL PRIMARY KEY,
    tenant_name             varchar(255),
    tenant_cfg_dbid         integer,
    start_ts                integer,
    end_ts                  integer,
    create_audit_key        numeric(19)   NOT NULL,
    update_audit_key        numeric(19)   NOT NULL
);

CREATE TABLE IF NOT EXISTS media_type (
    media_type_key          integer       NOT NULL PRIMARY KEY,
    media_name              varchar(255),
    media_name_code         varchar(255),
    is_online               smallint,
    create_audit_key        numeric(19)   NOT NULL,
    update_audit_key        numeric(19)   NOT NULL
);

CREATE TABLE IF NOT EXISTS interaction_type (
    interaction_type_key    integer       NOT NULL PRIMARY KEY,
    interaction_type        varchar(255),
    interaction_type_code   varchar(32),
    interaction_subtype     varchar(255),
    interaction_subtype_code varchar(32),
    create_audit_key        numeric(19)   NOT NULL,
    update_audit_key        numeric(19)   NOT NULL
);

CREATE TABLE IF NOT EXISTS resource_ (
    resource_key            integer       NOT NULL PRIMARY KEY,
    tenant_key              integer,
    resource_type           varchar(255),
    resource_type_code      varchar(32),
    resource_name           varchar(255),
    resource_cfg_dbid       integer,
    employee_id             varchar(255),
    agent_first_name        varchar(64),
    agent_last_name         varchar(64),
    start_ts                integer,
    end_ts                  integer,
    create_audit_key        numeric(19)   NOT NULL,
    update_audit_key        numeric(19)   NOT NULL
);

CREATE TABLE IF NOT EXISTS technical_descriptor (
    technical_descriptor_key integer      NOT NULL PRIMARY KEY,
    technical_result        varchar(255),
    technical_result_code   varchar(32),
    result_reason           varchar(255),
    result_reason_code      varchar(32),
    resource_role           varchar(255),
    resource_role_code      varchar(32),
    role_reason             varchar(255),
    role_reason_code        varchar(32),
    create_audit_key        numeric(19)   NOT NULL,
    update_audit_key        numeric(19)   NOT NULL
);

CREATE TABLE IF NOT EXISTS resource_state (
    resource_state_key      integer       NOT NULL PRIMARY KEY,
    state_type              varchar(255),
    state_type_code         varchar(32),
    state_name              varchar(255),
    state_name_code         varchar(32),
    create_audit_key        numeric(19)   NOT NULL,
    update_audit_key        numeric(19)   NOT NULL
);

CREATE TABLE IF NOT EXISTS interaction_descriptor (
    interaction_descriptor_key integer    NOT NULL PRIMARY KEY,
    tenant_key              integer,
    customer_segment        varchar(255),
    service_type            varchar(255),
    service_subtype         varchar(255),
    business_result         varchar(255),
    create_audit_key        numeric(19)   NOT NULL
);

CREATE TABLE IF NOT EXISTS interaction_fact (
    interaction_id          numeric(19)   NOT NULL PRIMARY KEY,
    tenant_key              integer       NOT NULL,
    interaction_type_key    integer       NOT NULL,
    media_type_key          integer       NOT NULL,
    media_server_root_ixn_id numeric(20),
    media_server_ixn_id     numeric(20),
    media_server_root_ixn_guid varchar(50),
    media_server_ixn_guid   varchar(50),
    source_address          varchar(255),
    target_address          varchar(255),
    subject                 varchar(1024),
    status                  smallint      DEFAULT 0,
    start_ts                integer,
    end_ts                  integer,
    start_date_time_key     integer,
    end_date_time_key       integer,
    create_audit_key        numeric(19)   NOT NULL,
    update_audit_key        numeric(19)   NOT NULL
);

CREATE TABLE IF NOT EXISTS interaction_resource_fact (
    interaction_resource_id numeric(19)   NOT NULL PRIMARY KEY,
    tenant_key              integer       NOT NULL,
    interaction_id          numeric(19)   NOT NULL,
    resource_key            integer,
    place_key               integer,
    technical_descriptor_key integer,
    interaction_type_key    integer,
    media_type_key          integer,
    interaction_descriptor_key integer,
    start_date_time_key     integer,
    start_ts                integer,
    end_ts                  integer,
    talk_duration           integer,
    hold_duration           integer,
    ring_duration           integer,
    after_call_work_duration integer,
    customer_talk_duration  integer,
    routing_point_duration  integer,
    talk_count              integer,
    resource_group_combination_key integer,
    last_vqueue_resource_key integer,
    create_audit_key        numeric(19)   NOT NULL,
    update_audit_key        numeric(19)   NOT NULL
);

CREATE TABLE IF NOT EXISTS mediation_segment_fact (
    mediation_segment_id    numeric(19)   NOT NULL PRIMARY KEY,
    tenant_key              integer       NOT NULL,
    interaction_id          numeric(19)   NOT NULL,
    resource_key            integer,
    technical_descriptor_key integer,
    media_type_key          integer,
    interaction_type_key    integer,
    start_date_time_key     integer,
    start_ts                integer,
    end_ts                  integer,
    mediation_duration      integer,
    mediation_count         integer,
    create_audit_key        numeric(19)   NOT NULL,
    update_audit_key        numeric(19)   NOT NULL
);

CREATE TABLE IF NOT EXISTS sm_res_session_fact (
    sm_res_session_fact_key numeric(19)   NOT NULL PRIMARY KEY,
    start_date_time_key     integer,
    end_date_time_key       integer,
    tenant_key              integer       NOT NULL,
    media_type_key          integer,
    resource_key            integer,
    resource_group_combination_key integer,
    start_ts                integer,
    end_ts                  integer,
    total_duration          integer,
    lead_clip_duration      integer,
    trail_clip_duration     integer,
    active_flag             smallint,
    purge_flag              smallint,
    create_audit_key        numeric(19)   NOT NULL,
    update_audit_key        numeric(19)   NOT NULL
);

CREATE TABLE IF NOT EXISTS sm_res_state_fact (
    sm_res_state_fact_key   numeric(19)   NOT NULL PRIMARY KEY,
    start_date_time_key     integer,
    end_date_time_key       integer,
    tenant_key              integer       NOT NULL,
    media_type_key          integer,
    resource_key            integer,
    resource_group_combination_key integer,
    resource_state_key      integer,
    start_ts                integer,
    end_ts                  integer,
    total_duration          integer,
    lead_clip_duration      integer,
    trail_clip_duration     integer,
    active_flag             smallint,
    purge_flag              smallint,
    create_audit_key        numeric(19)   NOT NULL,
    update_audit_key        numeric(19)   NOT NULL
);

CREATE TABLE IF NOT EXISTS irf_user_data_cust_1 (
    interaction_resource_id numeric(19)   NOT NULL PRIMARY KEY,
    start_date_time_key     integer,
    tenant_key              integer,
    create_audit_key        numeric(19)   NOT NULL,
    update_audit_key        numeric(19)   NOT NULL,
    custom_data_1           varchar(1024),
    custom_data_2           varchar(1024),
    custom_data_3           varchar(1024),
    custom_data_4           varchar(1024),
    custom_data_5           varchar(1024),
    custom_data_6           varchar(1024),
    custom_data_7           varchar(1024),
    custom_data_8           varchar(1024),
    custom_data_9           varchar(1024),
    custom_data_10          varchar(1024),
    custom_data_11          varchar(1024),
    custom_data_12          varchar(1024),
    custom_data_13          varchar(1024),
    custom_data_14          varchar(1024),
    custom_data_15          varchar(1024),
    custom_data_16          varchar(1024)
);

CREATE TABLE IF NOT EXISTS user_data_cust_dim_1 (
    id                      integer       NOT NULL PRIMARY KEY,
    tenant_key              integer,
    create_audit_key        numeric(19)   NOT NULL,
    dim_attribute_1         varchar(255),
    dim_attribute_2         varchar(255),
    dim_attribute_3         varchar(255),
    dim_attribute_4         varchar(255),
    dim_attribute_5         varchar(255)
);

-- Lineage indexes: the exporter selects by audit key.
CREATE INDEX IF NOT EXISTS i_if_cak  ON interaction_fact (create_audit_key);
CREATE INDEX IF NOT EXISTS i_if_uak  ON interaction_fact (update_audit_key);
CREATE INDEX IF NOT EXISTS i_irf_cak ON interaction_resource_fact (create_audit_key);
CREATE INDEX IF NOT EXISTS i_irf_uak ON interaction_resource_fact (update_audit_key);
CREATE INDEX IF NOT EXISTS i_msf_cak ON mediation_segment_fact (create_audit_key);
CREATE INDEX IF NOT EXISTS i_msf_uak ON mediation_segment_fact (update_audit_key);
CREATE INDEX IF NOT EXISTS i_srsf_cak ON sm_res_session_fact (create_audit_key);
CREATE INDEX IF NOT EXISTS i_srsf_uak ON sm_res_session_fact (update_audit_key);
CREATE INDEX IF NOT EXISTS i_srst_cak ON sm_res_state_fact (create_audit_key);
CREATE INDEX IF NOT EXISTS i_srst_uak ON sm_res_state_fact (update_audit_key);
CREATE INDEX IF NOT EXISTS i_udc1_cak ON irf_user_data_cust_1 (create_audit_key);
CREATE INDEX IF NOT EXISTS i_udc1_uak ON irf_user_data_cust_1 (update_audit_key);
