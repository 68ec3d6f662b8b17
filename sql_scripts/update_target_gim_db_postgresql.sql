-- Target warehouse schema (PostgreSQL) for the tables gim-export exports, and the loader's ledger.
-- Idempotent: run on an empty database it creates everything; run on an older target it adds the
-- missing tables and columns and never drops or rewrites data. `gim-export target-schema --dialect postgresql`
-- prints it; `--apply URL` runs it.
-- Custom user-data tables (IRF_USER_DATA_CUST_n, USER_DATA_CUST_DIM_n) beyond _1 are created by the
-- loader from their CSV header.

SET client_min_messages = warning;

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

ALTER TABLE date_time ADD COLUMN IF NOT EXISTS cal_date timestamp;
ALTER TABLE date_time ADD COLUMN IF NOT EXISTS label_yyyy_mm_dd varchar(10);
ALTER TABLE date_time ADD COLUMN IF NOT EXISTS label_hh24 varchar(2);
ALTER TABLE date_time ADD COLUMN IF NOT EXISTS cal_year_num integer;
ALTER TABLE date_time ADD COLUMN IF NOT EXISTS cal_month_num integer;
ALTER TABLE date_time ADD COLUMN IF NOT EXISTS cal_day_num_in_month integer;
ALTER TABLE date_time ADD COLUMN IF NOT EXISTS cal_hour_24_num integer;
ALTER TABLE date_time ADD COLUMN IF NOT EXISTS cal_minute_num integer;
ALTER TABLE date_time ADD COLUMN IF NOT EXISTS day_name varchar(16);
ALTER TABLE date_time ADD COLUMN IF NOT EXISTS create_audit_key numeric(19);
ALTER TABLE date_time ADD COLUMN IF NOT EXISTS update_audit_key numeric(19);

CREATE TABLE IF NOT EXISTS tenant (
    tenant_key              integer       NOT NULL PRIMARY KEY,
    tenant_name             varchar(255),
    tenant_cfg_dbid         integer,
    start_ts                integer,
    end_ts                  integer,
    create_audit_key        numeric(19)   NOT NULL,
    update_audit_key        numeric(19)   NOT NULL
);

ALTER TABLE tenant ADD COLUMN IF NOT EXISTS tenant_name varchar(255);
ALTER TABLE tenant ADD COLUMN IF NOT EXISTS tenant_cfg_dbid integer;
ALTER TABLE tenant ADD COLUMN IF NOT EXISTS start_ts integer;
ALTER TABLE tenant ADD COLUMN IF NOT EXISTS end_ts integer;
ALTER TABLE tenant ADD COLUMN IF NOT EXISTS create_audit_key numeric(19);
ALTER TABLE tenant ADD COLUMN IF NOT EXISTS update_audit_key numeric(19);

CREATE TABLE IF NOT EXISTS media_type (
    media_type_key          integer       NOT NULL PRIMARY KEY,
    media_name              varchar(255),
    media_name_code         varchar(255),
    is_online               smallint,
    create_audit_key        numeric(19)   NOT NULL,
    update_audit_key        numeric(19)   NOT NULL
);

ALTER TABLE media_type ADD COLUMN IF NOT EXISTS media_name varchar(255);
ALTER TABLE media_type ADD COLUMN IF NOT EXISTS media_name_code varchar(255);
ALTER TABLE media_type ADD COLUMN IF NOT EXISTS is_online smallint;
ALTER TABLE media_type ADD COLUMN IF NOT EXISTS create_audit_key numeric(19);
ALTER TABLE media_type ADD COLUMN IF NOT EXISTS update_audit_key numeric(19);

CREATE TABLE IF NOT EXISTS interaction_type (
    interaction_type_key    integer       NOT NULL PRIMARY KEY,
    interaction_type        varchar(255),
    interaction_type_code   varchar(32),
    interaction_subtype     varchar(255),
    interaction_subtype_code varchar(32),
    create_audit_key        numeric(19)   NOT NULL,
    update_audit_key        numeric(19)   NOT NULL
);

ALTER TABLE interaction_type ADD COLUMN IF NOT EXISTS interaction_type varchar(255);
ALTER TABLE interaction_type ADD COLUMN IF NOT EXISTS interaction_type_code varchar(32);
ALTER TABLE interaction_type ADD COLUMN IF NOT EXISTS interaction_subtype varchar(255);
ALTER TABLE interaction_type ADD COLUMN IF NOT EXISTS interaction_subtype_code varchar(32);
ALTER TABLE interaction_type ADD COLUMN IF NOT EXISTS create_audit_key numeric(19);
ALTER TABLE interaction_type ADD COLUMN IF NOT EXISTS update_audit_key numeric(19);

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

ALTER TABLE resource_ ADD COLUMN IF NOT EXISTS tenant_key integer;
ALTER TABLE resource_ ADD COLUMN IF NOT EXISTS resource_type varchar(255);
ALTER TABLE resource_ ADD COLUMN IF NOT EXISTS resource_type_code varchar(32);
ALTER TABLE resource_ ADD COLUMN IF NOT EXISTS resource_name varchar(255);
ALTER TABLE resource_ ADD COLUMN IF NOT EXISTS resource_cfg_dbid integer;
ALTER TABLE resource_ ADD COLUMN IF NOT EXISTS employee_id varchar(255);
ALTER TABLE resource_ ADD COLUMN IF NOT EXISTS agent_first_name varchar(64);
ALTER TABLE resource_ ADD COLUMN IF NOT EXISTS agent_last_name varchar(64);
ALTER TABLE resource_ ADD COLUMN IF NOT EXISTS start_ts integer;
ALTER TABLE resource_ ADD COLUMN IF NOT EXISTS end_ts integer;
ALTER TABLE resource_ ADD COLUMN IF NOT EXISTS create_audit_key numeric(19);
ALTER TABLE resource_ ADD COLUMN IF NOT EXISTS update_audit_key numeric(19);

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

ALTER TABLE technical_descriptor ADD COLUMN IF NOT EXISTS technical_result varchar(255);
ALTER TABLE technical_descriptor ADD COLUMN IF NOT EXISTS technical_result_code varchar(32);
ALTER TABLE technical_descriptor ADD COLUMN IF NOT EXISTS result_reason varchar(255);
ALTER TABLE technical_descriptor ADD COLUMN IF NOT EXISTS result_reason_code varchar(32);
ALTER TABLE technical_descriptor ADD COLUMN IF NOT EXISTS resource_role varchar(255);
ALTER TABLE technical_descriptor ADD COLUMN IF NOT EXISTS resource_role_code varchar(32);
ALTER TABLE technical_descriptor ADD COLUMN IF NOT EXISTS role_reason varchar(255);
ALTER TABLE technical_descriptor ADD COLUMN IF NOT EXISTS role_reason_code varchar(32);
ALTER TABLE technical_descriptor ADD COLUMN IF NOT EXISTS create_audit_key numeric(19);
ALTER TABLE technical_descriptor ADD COLUMN IF NOT EXISTS update_audit_key numeric(19);

CREATE TABLE IF NOT EXISTS resource_state (
    resource_state_key      integer       NOT NULL PRIMARY KEY,
    state_type              varchar(255),
    state_type_code         varchar(32),
    state_name              varchar(255),
    state_name_code         varchar(32),
    create_audit_key        numeric(19)   NOT NULL,
    update_audit_key        numeric(19)   NOT NULL
);

ALTER TABLE resource_state ADD COLUMN IF NOT EXISTS state_type varchar(255);
ALTER TABLE resource_state ADD COLUMN IF NOT EXISTS state_type_code varchar(32);
ALTER TABLE resource_state ADD COLUMN IF NOT EXISTS state_name varchar(255);
ALTER TABLE resource_state ADD COLUMN IF NOT EXISTS state_name_code varchar(32);
ALTER TABLE resource_state ADD COLUMN IF NOT EXISTS create_audit_key numeric(19);
ALTER TABLE resource_state ADD COLUMN IF NOT EXISTS update_audit_key numeric(19);

CREATE TABLE IF NOT EXISTS interaction_descriptor (
    interaction_descriptor_key integer    NOT NULL PRIMARY KEY,
    tenant_key              integer,
    customer_segment        varchar(255),
    service_type            varchar(255),
    service_subtype         varchar(255),
    business_result         varchar(255),
    create_audit_key        numeric(19)   NOT NULL
);

ALTER TABLE interaction_descriptor ADD COLUMN IF NOT EXISTS tenant_key integer;
ALTER TABLE interaction_descriptor ADD COLUMN IF NOT EXISTS customer_segment varchar(255);
ALTER TABLE interaction_descriptor ADD COLUMN IF NOT EXISTS service_type varchar(255);
ALTER TABLE interaction_descriptor ADD COLUMN IF NOT EXISTS service_subtype varchar(255);
ALTER TABLE interaction_descriptor ADD COLUMN IF NOT EXISTS business_result varchar(255);
ALTER TABLE interaction_descriptor ADD COLUMN IF NOT EXISTS create_audit_key numeric(19);

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

ALTER TABLE interaction_fact ADD COLUMN IF NOT EXISTS tenant_key integer;
ALTER TABLE interaction_fact ADD COLUMN IF NOT EXISTS interaction_type_key integer;
ALTER TABLE interaction_fact ADD COLUMN IF NOT EXISTS media_type_key integer;
ALTER TABLE interaction_fact ADD COLUMN IF NOT EXISTS media_server_root_ixn_id numeric(20);
ALTER TABLE interaction_fact ADD COLUMN IF NOT EXISTS media_server_ixn_id numeric(20);
ALTER TABLE interaction_fact ADD COLUMN IF NOT EXISTS media_server_root_ixn_guid varchar(50);
ALTER TABLE interaction_fact ADD COLUMN IF NOT EXISTS media_server_ixn_guid varchar(50);
ALTER TABLE interaction_fact ADD COLUMN IF NOT EXISTS source_address varchar(255);
ALTER TABLE interaction_fact ADD COLUMN IF NOT EXISTS target_address varchar(255);
ALTER TABLE interaction_fact ADD COLUMN IF NOT EXISTS subject varchar(1024);
ALTER TABLE interaction_fact ADD COLUMN IF NOT EXISTS status smallint;
ALTER TABLE interaction_fact ADD COLUMN IF NOT EXISTS start_ts integer;
ALTER TABLE interaction_fact ADD COLUMN IF NOT EXISTS end_ts integer;
ALTER TABLE interaction_fact ADD COLUMN IF NOT EXISTS start_date_time_key integer;
ALTER TABLE interaction_fact ADD COLUMN IF NOT EXISTS end_date_time_key integer;
ALTER TABLE interaction_fact ADD COLUMN IF NOT EXISTS create_audit_key numeric(19);
ALTER TABLE interaction_fact ADD COLUMN IF NOT EXISTS update_audit_key numeric(19);

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

ALTER TABLE interaction_resource_fact ADD COLUMN IF NOT EXISTS tenant_key integer;
ALTER TABLE interaction_resource_fact ADD COLUMN IF NOT EXISTS interaction_id numeric(19);
ALTER TABLE interaction_resource_fact ADD COLUMN IF NOT EXISTS resource_key integer;
ALTER TABLE interaction_resource_fact ADD COLUMN IF NOT EXISTS place_key integer;
ALTER TABLE interaction_resource_fact ADD COLUMN IF NOT EXISTS technical_descriptor_key integer;
ALTER TABLE interaction_resource_fact ADD COLUMN IF NOT EXISTS interaction_type_key integer;
ALTER TABLE interaction_resource_fact ADD COLUMN IF NOT EXISTS media_type_key integer;
ALTER TABLE interaction_resource_fact ADD COLUMN IF NOT EXISTS interaction_descriptor_key integer;
ALTER TABLE interaction_resource_fact ADD COLUMN IF NOT EXISTS start_date_time_key integer;
ALTER TABLE interaction_resource_fact ADD COLUMN IF NOT EXISTS start_ts integer;
ALTER TABLE interaction_resource_fact ADD COLUMN IF NOT EXISTS end_ts integer;
ALTER TABLE interaction_resource_fact ADD COLUMN IF NOT EXISTS talk_duration integer;
ALTER TABLE interaction_resource_fact ADD COLUMN IF NOT EXISTS hold_duration integer;
ALTER TABLE interaction_resource_fact ADD COLUMN IF NOT EXISTS ring_duration integer;
ALTER TABLE interaction_resource_fact ADD COLUMN IF NOT EXISTS after_call_work_duration integer;
ALTER TABLE interaction_resource_fact ADD COLUMN IF NOT EXISTS customer_talk_duration integer;
ALTER TABLE interaction_resource_fact ADD COLUMN IF NOT EXISTS routing_point_duration integer;
ALTER TABLE interaction_resource_fact ADD COLUMN IF NOT EXISTS talk_count integer;
ALTER TABLE interaction_resource_fact ADD COLUMN IF NOT EXISTS resource_group_combination_key integer;
ALTER TABLE interaction_resource_fact ADD COLUMN IF NOT EXISTS last_vqueue_resource_key integer;
ALTER TABLE interaction_resource_fact ADD COLUMN IF NOT EXISTS create_audit_key numeric(19);
ALTER TABLE interaction_resource_fact ADD COLUMN IF NOT EXISTS update_audit_key numeric(19);

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

ALTER TABLE mediation_segment_fact ADD COLUMN IF NOT EXISTS tenant_key integer;
ALTER TABLE mediation_segment_fact ADD COLUMN IF NOT EXISTS interaction_id numeric(19);
ALTER TABLE mediation_segment_fact ADD COLUMN IF NOT EXISTS resource_key integer;
ALTER TABLE mediation_segment_fact ADD COLUMN IF NOT EXISTS technical_descriptor_key integer;
ALTER TABLE mediation_segment_fact ADD COLUMN IF NOT EXISTS media_type_key integer;
ALTER TABLE mediation_segment_fact ADD COLUMN IF NOT EXISTS interaction_type_key integer;
ALTER TABLE mediation_segment_fact ADD COLUMN IF NOT EXISTS start_date_time_key integer;
ALTER TABLE mediation_segment_fact ADD COLUMN IF NOT EXISTS start_ts integer;
ALTER TABLE mediation_segment_fact ADD COLUMN IF NOT EXISTS end_ts integer;
ALTER TABLE mediation_segment_fact ADD COLUMN IF NOT EXISTS mediation_duration integer;
ALTER TABLE mediation_segment_fact ADD COLUMN IF NOT EXISTS mediation_count integer;
ALTER TABLE mediation_segment_fact ADD COLUMN IF NOT EXISTS create_audit_key numeric(19);
ALTER TABLE mediation_segment_fact ADD COLUMN IF NOT EXISTS update_audit_key numeric(19);

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

ALTER TABLE sm_res_session_fact ADD COLUMN IF NOT EXISTS start_date_time_key integer;
ALTER TABLE sm_res_session_fact ADD COLUMN IF NOT EXISTS end_date_time_key integer;
ALTER TABLE sm_res_session_fact ADD COLUMN IF NOT EXISTS tenant_key integer;
ALTER TABLE sm_res_session_fact ADD COLUMN IF NOT EXISTS media_type_key integer;
ALTER TABLE sm_res_session_fact ADD COLUMN IF NOT EXISTS resource_key integer;
ALTER TABLE sm_res_session_fact ADD COLUMN IF NOT EXISTS resource_group_combination_key integer;
ALTER TABLE sm_res_session_fact ADD COLUMN IF NOT EXISTS start_ts integer;
ALTER TABLE sm_res_session_fact ADD COLUMN IF NOT EXISTS end_ts integer;
ALTER TABLE sm_res_session_fact ADD COLUMN IF NOT EXISTS total_duration integer;
ALTER TABLE sm_res_session_fact ADD COLUMN IF NOT EXISTS lead_clip_duration integer;
ALTER TABLE sm_res_session_fact ADD COLUMN IF NOT EXISTS trail_clip_duration integer;
ALTER TABLE sm_res_session_fact ADD COLUMN IF NOT EXISTS active_flag smallint;
ALTER TABLE sm_res_session_fact ADD COLUMN IF NOT EXISTS purge_flag smallint;
ALTER TABLE sm_res_session_fact ADD COLUMN IF NOT EXISTS create_audit_key numeric(19);
ALTER TABLE sm_res_session_fact ADD COLUMN IF NOT EXISTS update_audit_key numeric(19);

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

ALTER TABLE sm_res_state_fact ADD COLUMN IF NOT EXISTS start_date_time_key integer;
ALTER TABLE sm_res_state_fact ADD COLUMN IF NOT EXISTS end_date_time_key integer;
ALTER TABLE sm_res_state_fact ADD COLUMN IF NOT EXISTS tenant_key integer;
ALTER TABLE sm_res_state_fact ADD COLUMN IF NOT EXISTS media_type_key integer;
ALTER TABLE sm_res_state_fact ADD COLUMN IF NOT EXISTS resource_key integer;
ALTER TABLE sm_res_state_fact ADD COLUMN IF NOT EXISTS resource_group_combination_key integer;
ALTER TABLE sm_res_state_fact ADD COLUMN IF NOT EXISTS resource_state_key integer;
ALTER TABLE sm_res_state_fact ADD COLUMN IF NOT EXISTS start_ts integer;
ALTER TABLE sm_res_state_fact ADD COLUMN IF NOT EXISTS end_ts integer;
ALTER TABLE sm_res_state_fact ADD COLUMN IF NOT EXISTS total_duration integer;
ALTER TABLE sm_res_state_fact ADD COLUMN IF NOT EXISTS lead_clip_duration integer;
ALTER TABLE sm_res_state_fact ADD COLUMN IF NOT EXISTS trail_clip_duration integer;
ALTER TABLE sm_res_state_fact ADD COLUMN IF NOT EXISTS active_flag smallint;
ALTER TABLE sm_res_state_fact ADD COLUMN IF NOT EXISTS purge_flag smallint;
ALTER TABLE sm_res_state_fact ADD COLUMN IF NOT EXISTS create_audit_key numeric(19);
ALTER TABLE sm_res_state_fact ADD COLUMN IF NOT EXISTS update_audit_key numeric(19);

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

ALTER TABLE irf_user_data_cust_1 ADD COLUMN IF NOT EXISTS start_date_time_key integer;
ALTER TABLE irf_user_data_cust_1 ADD COLUMN IF NOT EXISTS tenant_key integer;
ALTER TABLE irf_user_data_cust_1 ADD COLUMN IF NOT EXISTS create_audit_key numeric(19);
ALTER TABLE irf_user_data_cust_1 ADD COLUMN IF NOT EXISTS update_audit_key numeric(19);
ALTER TABLE irf_user_data_cust_1 ADD COLUMN IF NOT EXISTS custom_data_1 varchar(1024);
ALTER TABLE irf_user_data_cust_1 ADD COLUMN IF NOT EXISTS custom_data_2 varchar(1024);
ALTER TABLE irf_user_data_cust_1 ADD COLUMN IF NOT EXISTS custom_data_3 varchar(1024);
ALTER TABLE irf_user_data_cust_1 ADD COLUMN IF NOT EXISTS custom_data_4 varchar(1024);
ALTER TABLE irf_user_data_cust_1 ADD COLUMN IF NOT EXISTS custom_data_5 varchar(1024);
ALTER TABLE irf_user_data_cust_1 ADD COLUMN IF NOT EXISTS custom_data_6 varchar(1024);
ALTER TABLE irf_user_data_cust_1 ADD COLUMN IF NOT EXISTS custom_data_7 varchar(1024);
ALTER TABLE irf_user_data_cust_1 ADD COLUMN IF NOT EXISTS custom_data_8 varchar(1024);
ALTER TABLE irf_user_data_cust_1 ADD COLUMN IF NOT EXISTS custom_data_9 varchar(1024);
ALTER TABLE irf_user_data_cust_1 ADD COLUMN IF NOT EXISTS custom_data_10 varchar(1024);
ALTER TABLE irf_user_data_cust_1 ADD COLUMN IF NOT EXISTS custom_data_11 varchar(1024);
ALTER TABLE irf_user_data_cust_1 ADD COLUMN IF NOT EXISTS custom_data_12 varchar(1024);
ALTER TABLE irf_user_data_cust_1 ADD COLUMN IF NOT EXISTS custom_data_13 varchar(1024);
ALTER TABLE irf_user_data_cust_1 ADD COLUMN IF NOT EXISTS custom_data_14 varchar(1024);
ALTER TABLE irf_user_data_cust_1 ADD COLUMN IF NOT EXISTS custom_data_15 varchar(1024);
ALTER TABLE irf_user_data_cust_1 ADD COLUMN IF NOT EXISTS custom_data_16 varchar(1024);

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

ALTER TABLE user_data_cust_dim_1 ADD COLUMN IF NOT EXISTS tenant_key integer;
ALTER TABLE user_data_cust_dim_1 ADD COLUMN IF NOT EXISTS create_audit_key numeric(19);
ALTER TABLE user_data_cust_dim_1 ADD COLUMN IF NOT EXISTS dim_attribute_1 varchar(255);
ALTER TABLE user_data_cust_dim_1 ADD COLUMN IF NOT EXISTS dim_attribute_2 varchar(255);
ALTER TABLE user_data_cust_dim_1 ADD COLUMN IF NOT EXISTS dim_attribute_3 varchar(255);
ALTER TABLE user_data_cust_dim_1 ADD COLUMN IF NOT EXISTS dim_attribute_4 varchar(255);
ALTER TABLE user_data_cust_dim_1 ADD COLUMN IF NOT EXISTS dim_attribute_5 varchar(255);

CREATE TABLE IF NOT EXISTS gim_export_ledger (
    folder                  varchar(100)  NOT NULL PRIMARY KEY,
    hwm_from_audit_key      numeric(19)   NOT NULL,
    hwm_from_created_ts     bigint        NOT NULL,
    hwm_to_audit_key        numeric(19)   NOT NULL,
    hwm_to_created_ts       bigint        NOT NULL,
    max_data_ts             bigint        NOT NULL,
    row_counts              text          NOT NULL,
    loaded_at               timestamp(3)  NOT NULL,
    zip_sha1                varchar(40),
    chain_generation        integer,
    apply_seq               bigint
);
-- Added by gim-export 0.2 (restarts and re-exports): which bytes were applied, of which chain, in
-- which order.
ALTER TABLE gim_export_ledger ADD COLUMN IF NOT EXISTS zip_sha1 varchar(40);
ALTER TABLE gim_export_ledger ADD COLUMN IF NOT EXISTS chain_generation integer;
ALTER TABLE gim_export_ledger ADD COLUMN IF NOT EXISTS apply_seq bigint;
