//! Packaging and deployment: `deploy/cronjob.yaml` and the `Dockerfile`, read the way Kubernetes and
//! Docker read them, and held to what was broken in them (issue 11 item 14): an image nothing built, a
//! `sh -c` wrapper as PID 1 that kept SIGTERM from gim-export, retries of errors no retry cures, a
//! metrics file in a directory that did not exist, more threads than CPUs, and a pod running as root.
//!
//! The YAML is read with python3's PyYAML and validated with `kubernetes-validate` (both installed by
//! `scripts/ensure-services.sh`); the rest is plain `serde_json`. `GIM_EXPORT_TEST_DEPLOY_MANIFEST`
//! points these tests at another manifest (to check that they fail on an old one).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// The Kubernetes versions the manifest is validated against: the oldest it is written for (every
/// field it uses is there, on by default, from 1.30) and the newest `kubernetes-validate` ships.
const KUBERNETES_VERSIONS: &[Option<&str>] = &[Some("1.30.0"), None];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn manifest_path() -> PathBuf {
    std::env::var_os("GIM_EXPORT_TEST_DEPLOY_MANIFEST")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("deploy/cronjob.yaml"))
}

fn dockerfile() -> String {
    let path = repo().join("Dockerfile");
    std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}: the image the CronJob runs must be built from a Dockerfile in this repository",
            path.display()
        )
    })
}

/// Runs python3 and returns its stdout; a failure prints everything, and says how to get the modules.
fn python(args: &[&str]) -> String {
    let out = Command::new("python3")
        .args(args)
        .output()
        .expect("run python3 (scripts/ensure-services.sh installs it)");
    assert!(
        out.status.success(),
        "python3 {args:?} exited {:?} (scripts/ensure-services.sh installs PyYAML and \
         kubernetes-validate)\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 from python3")
}

/// Every document of a YAML file, as JSON values (empty documents left out).
fn yaml_documents(path: &Path) -> Vec<Value> {
    let script = "import json, sys, yaml\n\
                  with open(sys.argv[1]) as f:\n    \
                  docs = [d for d in yaml.safe_load_all(f) if d is not None]\n\
                  json.dump(docs, sys.stdout)\n";
    let json = python(&["-c", script, path.to_str().expect("UTF-8 path")]);
    match serde_json::from_str(&json).expect("PyYAML's output is JSON") {
        Value::Array(docs) => docs,
        other => panic!("expected a list of documents, got {other}"),
    }
}

fn documents() -> Vec<Value> {
    yaml_documents(&manifest_path())
}

fn cronjob() -> Value {
    let docs = documents();
    docs.iter()
        .find(|d| d["kind"] == "CronJob")
        .cloned()
        .unwrap_or_else(|| panic!("no CronJob in {}", manifest_path().display()))
}

fn job_spec(cronjob: &Value) -> &Value {
    &cronjob["spec"]["jobTemplate"]["spec"]
}

fn pod_spec(cronjob: &Value) -> &Value {
    &job_spec(cronjob)["template"]["spec"]
}

/// The gim-export container (by name, or the only container).
fn container(cronjob: &Value) -> &Value {
    let containers = pod_spec(cronjob)["containers"]
        .as_array()
        .expect("the pod has containers");
    containers
        .iter()
        .find(|c| c["name"] == "gim-export")
        .or(if containers.len() == 1 {
            containers.first()
        } else {
            None
        })
        .unwrap_or_else(|| panic!("no gim-export container in {containers:?}"))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|s| match s {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The container's command and args, as one list.
fn command_line(c: &Value) -> Vec<String> {
    let mut all = strings(&c["command"]);
    all.extend(strings(&c["args"]));
    all
}

/// A setting of the container: `--flag VALUE` or `--flag=VALUE` on its command line (read word by
/// word, so that a flag inside a `sh -c` script is found too), else the environment variable (a
/// literal `value`; one from a Secret or ConfigMap has none to check).
fn setting(c: &Value, flag: &str, env: &str) -> Option<String> {
    let line: Vec<String> = command_line(c)
        .iter()
        .flat_map(|a| a.split_whitespace())
        .map(|w| w.trim_end_matches(';').to_string())
        .collect();
    for (i, a) in line.iter().enumerate() {
        if a == flag {
            return line.get(i + 1).cloned();
        }
        if let Some(v) = a.strip_prefix(&format!("{flag}=")) {
            return Some(v.to_string());
        }
    }
    c["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == env)
        .and_then(|e| e["value"].as_str().map(str::to_string))
}

/// The action the Job's podFailurePolicy takes when gim-export exits with `code`: the first rule that
/// matches, as Kubernetes applies them; `None` when no rule does (the failure counts toward
/// backoffLimit, as `Count` would).
fn action_for_exit(cronjob: &Value, code: i64) -> Option<String> {
    let rules = job_spec(cronjob)["podFailurePolicy"]["rules"].as_array()?;
    rules.iter().find_map(|rule| {
        let on = &rule["onExitCodes"];
        if on.is_null() {
            return None;
        }
        if !(on["containerName"].is_null() || on["containerName"] == "gim-export") {
            return None;
        }
        let listed = on["values"]
            .as_array()
            .is_some_and(|v| v.iter().any(|x| x.as_i64() == Some(code)));
        let matches = match on["operator"].as_str() {
            Some("In") => listed,
            Some("NotIn") => !listed && code != 0,
            _ => false,
        };
        matches.then(|| rule["action"].as_str().unwrap_or_default().to_string())
    })
}

/// The action for a pod condition (`DisruptionTarget`), if a rule names it.
fn action_for_condition(cronjob: &Value, condition: &str) -> Option<String> {
    let rules = job_spec(cronjob)["podFailurePolicy"]["rules"].as_array()?;
    rules.iter().find_map(|rule| {
        let named = rule["onPodConditions"]
            .as_array()
            .is_some_and(|cs| cs.iter().any(|c| c["type"] == condition));
        named.then(|| rule["action"].as_str().unwrap_or_default().to_string())
    })
}

/// A securityContext field as it applies to the container: the container's own, else the pod's.
fn effective<'a>(cronjob: &'a Value, field: &str) -> &'a Value {
    let own = &container(cronjob)["securityContext"][field];
    if own.is_null() {
        &pod_spec(cronjob)["securityContext"][field]
    } else {
        own
    }
}

/// The container's volume mounts: (mountPath, readOnly).
fn mounts(cronjob: &Value) -> Vec<(String, bool)> {
    container(cronjob)["volumeMounts"]
        .as_array()
        .map(|ms| {
            ms.iter()
                .map(|m| {
                    (
                        m["mountPath"]
                            .as_str()
                            .unwrap_or_default()
                            .trim_end_matches('/')
                            .to_string(),
                        m["readOnly"] == true,
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Whether `path` lies on a volume mounted writable (not on the root filesystem).
fn on_writable_volume(cronjob: &Value, path: &str) -> bool {
    let path = Path::new(path);
    mounts(cronjob)
        .iter()
        .filter(|(mount, _)| path.starts_with(mount))
        .max_by_key(|(mount, _)| mount.len())
        .is_some_and(|(_, read_only)| !read_only)
}

/// CPU quantity (`"2"`, `"1500m"`, `0.5`) in cores.
fn cpu_cores(q: &Value) -> Option<f64> {
    match q {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => match s.strip_suffix('m') {
            Some(milli) => milli.parse::<f64>().ok().map(|m| m / 1000.0),
            None => s.parse().ok(),
        },
        _ => None,
    }
}

/// The Dockerfile's instructions: continuation lines joined, comments and blank lines left out.
fn dockerfile_instructions(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if current.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        if trimmed.starts_with('#') {
            continue; // a comment inside a continued instruction
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                let (word, rest) = current
                    .split_once(char::is_whitespace)
                    .unwrap_or((&current, ""));
                out.push((word.to_ascii_uppercase(), rest.trim().to_string()));
                current.clear();
            }
        }
    }
    out
}

/// The image the Dockerfile's last stage runs: its exec-form ENTRYPOINT.
fn dockerfile_entrypoint(text: &str) -> Vec<String> {
    let instructions = dockerfile_instructions(text);
    let (_, entrypoint) = instructions
        .iter()
        .rev()
        .find(|(word, _)| word == "ENTRYPOINT")
        .expect("the Dockerfile has an ENTRYPOINT");
    let v: Value = serde_json::from_str(entrypoint).unwrap_or_else(|_| {
        panic!(
            "ENTRYPOINT {entrypoint} is in shell form: it runs /bin/sh -c as PID 1, which keeps \
             SIGTERM from gim-export"
        )
    });
    strings(&v)
}

#[test]
fn the_cronjob_image_is_built_from_the_dockerfile_in_this_repo() {
    let image = container(&cronjob())["image"]
        .as_str()
        .expect("the container names an image")
        .to_string();
    let dockerfile = dockerfile();
    assert!(
        dockerfile.contains(&format!("docker build -t {image} .")),
        "the CronJob runs {image}, but the Dockerfile does not say how to build it \
         (`docker build -t {image} .`), so nothing builds the image the manifest names"
    );
    let manifest = std::fs::read_to_string(manifest_path()).unwrap();
    assert!(
        manifest.contains(&format!("docker build -t {image} .")),
        "the manifest should say, by its image, that the image is built from the Dockerfile \
         (`docker build -t {image} .`)"
    );
}

#[test]
fn the_dockerfile_is_multi_stage_and_runs_the_binary_as_non_root() {
    let text = dockerfile();
    let instructions = dockerfile_instructions(&text);
    let froms: Vec<usize> = (0..instructions.len())
        .filter(|&i| instructions[i].0 == "FROM")
        .collect();
    assert!(
        froms.len() >= 2,
        "a build stage and a runtime stage expected, found {} FROM: {froms:?}",
        froms.len()
    );
    let build = instructions.iter().find(|(word, rest)| {
        word == "RUN" && rest.contains("cargo build") && rest.contains("--release")
    });
    let (_, build) = build.expect("a RUN cargo build --release in the build stage");
    assert!(
        build.contains("--locked"),
        "the release build must use Cargo.lock as it is (--locked): {build}"
    );

    let last = *froms.last().unwrap();
    let runtime = &instructions[last..];
    let base = runtime[0].1.split_whitespace().next().unwrap_or_default();
    assert!(
        !base.starts_with("rust:"),
        "the runtime stage should not ship the toolchain: FROM {base}"
    );
    let user = runtime
        .iter()
        .rev()
        .find(|(word, _)| word == "USER")
        .map(|(_, u)| u.split(':').next().unwrap_or_default().to_string());
    match &user {
        Some(u) => assert!(
            u != "0" && u != "root",
            "the runtime stage runs as {u}: it must run as a non-root user"
        ),
        None => assert!(
            base.ends_with(":nonroot"),
            "the runtime stage sets no USER and its base {base} is not a :nonroot image: it runs as root"
        ),
    }
    if let Some(u) = &user {
        assert!(
            u.parse::<u32>().is_ok(),
            "USER {u} should be numeric, so that Kubernetes' runAsNonRoot can check it"
        );
    }

    let entrypoint = dockerfile_entrypoint(&text);
    assert!(
        entrypoint.len() == 1 && entrypoint[0].ends_with("/gim-export"),
        "the ENTRYPOINT should be the gim-export binary itself, found {entrypoint:?}"
    );
    let copied = runtime.iter().any(|(word, rest)| {
        word == "COPY" && rest.starts_with("--from=") && rest.ends_with(&entrypoint[0])
    });
    assert!(
        copied,
        "the runtime stage should COPY --from the build stage to {}",
        entrypoint[0]
    );

    let ignore = std::fs::read_to_string(repo().join(".dockerignore"))
        .expect("a .dockerignore keeps target/ and local databases out of the build context");
    assert!(
        ignore
            .lines()
            .any(|l| l.trim().trim_end_matches('/') == "target"),
        ".dockerignore should leave out target/: {ignore}"
    );
}

#[test]
fn the_cronjob_runs_the_binary_directly_so_sigterm_reaches_it() {
    let cj = cronjob();
    let c = container(&cj);
    let line = command_line(c);
    let shell = line.iter().find(|a| {
        let name = a.rsplit('/').next().unwrap_or(a);
        matches!(name, "sh" | "bash" | "dash" | "ash") || a.as_str() == "-c"
    });
    assert!(
        shell.is_none(),
        "the container runs a shell ({shell:?} in {line:?}): as PID 1 a shell neither forwards \
         SIGTERM nor dies of it, so gim-export never hears the pod is ending"
    );
    let command = strings(&c["command"]);
    let program = if command.is_empty() {
        // The image's ENTRYPOINT runs; it must be the binary (the Dockerfile test checks its form).
        dockerfile_entrypoint(&dockerfile())
            .first()
            .cloned()
            .unwrap_or_default()
    } else {
        command[0].clone()
    };
    assert!(
        program.ends_with("gim-export"),
        "the container's process should be gim-export, found {program:?} (command {command:?})"
    );
    assert_eq!(
        strings(&c["args"]).first().map(String::as_str),
        Some("export"),
        "the CronJob runs `gim-export export`: {line:?}"
    );
    let grace = pod_spec(&cj)["terminationGracePeriodSeconds"]
        .as_i64()
        .unwrap_or(30);
    assert!(
        grace >= 60,
        "on SIGTERM gim-export finishes the folder in progress: {grace} s before SIGKILL is too short"
    );
}

#[test]
fn the_cronjob_fails_fast_on_configuration_errors_and_refused_folders() {
    let cj = cronjob();
    assert_eq!(
        pod_spec(&cj)["restartPolicy"],
        "Never",
        "podFailurePolicy needs restartPolicy Never"
    );
    for (code, meaning) in [
        (2, "a configuration or usage error"),
        (5, "a folder that failed verification or was refused"),
    ] {
        assert_eq!(
            action_for_exit(&cj, code).as_deref(),
            Some("FailJob"),
            "exit {code} ({meaning}) fails the same way on every retry: podFailurePolicy should \
             end the Job (FailJob), not retry it backoffLimit ({}) times; rules: {}",
            job_spec(&cj)["backoffLimit"],
            job_spec(&cj)["podFailurePolicy"]
        );
    }
}

#[test]
fn the_cronjob_does_not_rerun_a_run_that_had_nothing_to_do() {
    let cj = cronjob();
    let action = action_for_exit(&cj, 3);
    // Ignore replaces the pod without limit (each new one exits 3 again); Count (or no rule) re-runs
    // it backoffLimit times for nothing. FailJob is the one action that does not re-run it.
    assert_eq!(
        action.as_deref(),
        Some("FailJob"),
        "exit 3 (nothing to do) must not be re-run within the Job; rules: {}",
        job_spec(&cj)["podFailurePolicy"]
    );
}

#[test]
fn a_quiet_period_is_a_successful_job_not_a_failed_one() {
    // Regression: exit 3 (nothing to do) failed the Job (through the pod failure policy) at every
    // quiet period, so failed Jobs could not be alerted on.
    let cj = cronjob();
    assert_eq!(
        setting(
            container(&cj),
            "--idle-exit-code",
            "GIM_EXPORT_IDLE_EXIT_CODE"
        )
        .as_deref(),
        Some("0"),
        "set GIM_EXPORT_IDLE_EXIT_CODE=0 (or --idle-exit-code 0) so that nothing to do exits 0"
    );
}

#[test]
fn every_exit_code_gets_the_job_action_its_meaning_calls_for() {
    let cj = cronjob();
    let policy = &job_spec(&cj)["podFailurePolicy"];
    let expect = |code: i64, wanted: &[Option<&str>], why: &str| {
        let action = action_for_exit(&cj, code);
        assert!(
            wanted.contains(&action.as_deref()),
            "exit {code}: {why}; expected one of {wanted:?}, found {action:?} in {policy}"
        );
    };
    expect(
        8,
        &[Some("FailJob")],
        "published, hook failed: the next run retries the hook",
    );
    expect(
        143,
        &[Some("Ignore")],
        "stopped by SIGTERM: the pod was being ended, not gim-export's failure",
    );
    expect(
        4,
        &[Some("Count"), None],
        "another run holds the lock: retry with back-off, bounded (Ignore would loop)",
    );
    for code in [1, 6, 7] {
        expect(
            code,
            &[Some("Count"), None],
            "possibly transient (database, files): retried up to backoffLimit",
        );
    }
    assert_eq!(
        action_for_condition(&cj, "DisruptionTarget").as_deref(),
        Some("Ignore"),
        "an evicted or preempted pod is not gim-export's failure: {policy}"
    );
    let backoff = job_spec(&cj)["backoffLimit"].as_i64().unwrap_or(6);
    assert!(
        (1..=6).contains(&backoff),
        "backoffLimit {backoff}: database errors deserve a retry or two, not an endless one"
    );
}

#[test]
fn the_cronjob_runs_as_non_root_with_a_read_only_root_filesystem() {
    let cj = cronjob();
    let sc = &container(&cj)["securityContext"];
    assert_eq!(
        effective(&cj, "runAsNonRoot"),
        &Value::Bool(true),
        "runAsNonRoot is not set: {sc}"
    );
    let user = effective(&cj, "runAsUser");
    assert!(
        user.as_i64().is_some_and(|u| u > 0),
        "runAsUser should be a non-root uid (the image's 65532), found {user}"
    );
    assert!(
        pod_spec(&cj)["securityContext"]["fsGroup"]
            .as_i64()
            .is_some_and(|g| g > 0),
        "fsGroup is needed for the non-root user to write the claim: {}",
        pod_spec(&cj)["securityContext"]
    );
    assert_eq!(
        sc["readOnlyRootFilesystem"],
        Value::Bool(true),
        "readOnlyRootFilesystem: {sc}"
    );
    assert_eq!(
        sc["allowPrivilegeEscalation"],
        Value::Bool(false),
        "allowPrivilegeEscalation: {sc}"
    );
    assert_ne!(sc["privileged"], Value::Bool(true), "privileged: {sc}");
    assert!(
        strings(&sc["capabilities"]["drop"]).contains(&"ALL".to_string()),
        "capabilities should drop ALL: {sc}"
    );
    assert_eq!(
        effective(&cj, "seccompProfile")["type"],
        "RuntimeDefault",
        "seccompProfile RuntimeDefault: {sc}"
    );

    // With a read-only root filesystem, everything gim-export writes must be on a writable volume.
    let c = container(&cj);
    for (flag, env) in [
        ("--output", "GIM_EXPORT_OUTPUT"),
        ("--metrics-file", "GIM_EXPORT_METRICS_FILE"),
    ] {
        let path = setting(c, flag, env)
            .unwrap_or_else(|| panic!("the CronJob should set {flag} (or {env}) explicitly"));
        assert!(
            path.starts_with('/') && on_writable_volume(&cj, &path),
            "{flag} {path} is not on a writable volume (mounts: {:?}); the root filesystem is read-only",
            mounts(&cj)
        );
    }
}

#[test]
fn the_metrics_file_is_written_into_a_directory_that_exists() {
    let cj = cronjob();
    let c = container(&cj);
    let metrics = setting(c, "--metrics-file", "GIM_EXPORT_METRICS_FILE")
        .expect("the CronJob writes a metrics file (--metrics-file)");
    let parent = Path::new(&metrics)
        .parent()
        .and_then(Path::to_str)
        .unwrap_or_default()
        .trim_end_matches('/')
        .to_string();
    // gim-export replaces the file through a temporary file in its parent directory and does not
    // create that directory: it must be a mount point, or made by an init container.
    let mounted = mounts(&cj).iter().any(|(m, _)| *m == parent);
    let made = pod_spec(&cj)["initContainers"]
        .as_array()
        .is_some_and(|ics| {
            ics.iter().any(|ic| {
                let line = command_line(ic).join(" ");
                line.contains("mkdir") && line.contains(&parent)
            })
        });
    assert!(
        mounted || made,
        "the metrics file {metrics} goes into {parent}, which is neither a volume's mountPath \
         (mounts: {:?}) nor made by an init container: gim-export would never write it",
        mounts(&cj)
    );
}

#[test]
fn the_cronjob_threads_fit_its_cpu_request() {
    let cj = cronjob();
    let c = container(&cj);
    let threads: usize = setting(c, "--threads", "GIM_EXPORT_THREADS")
        .expect("set --threads (GIM_EXPORT_THREADS): without it gim-export counts the node's CPUs")
        .parse()
        .expect("a number of threads");
    let request = &c["resources"]["requests"]["cpu"];
    let cpus = cpu_cores(request).unwrap_or_else(|| panic!("no CPU request: {request}"));
    assert!(
        threads >= 1 && threads as f64 <= cpus && cpus < threads as f64 + 1.0,
        "{threads} export threads against a CPU request of {request}: one thread per requested CPU"
    );
}

#[test]
fn the_manifest_is_valid_against_the_kubernetes_schema() {
    let path = manifest_path();
    let docs = documents();
    let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    assert_eq!(
        kinds,
        ["CronJob", "PersistentVolumeClaim"],
        "deploy/cronjob.yaml: a CronJob and the claim it mounts"
    );
    let claim = docs[1]["metadata"]["name"].as_str().unwrap_or_default();
    let volumes = &pod_spec(&docs[0])["volumes"];
    assert!(
        volumes.as_array().is_some_and(|vs| vs
            .iter()
            .any(|v| v["persistentVolumeClaim"]["claimName"] == claim)),
        "the CronJob should mount the claim {claim} the manifest defines: {volumes}"
    );

    for version in KUBERNETES_VERSIONS {
        let mut args = vec!["-m", "kubernetes_validate", "--strict", "--no-warn"];
        if let Some(v) = version {
            args.extend(["--kubernetes-version", v]);
        }
        args.push(path.to_str().unwrap());
        let out = Command::new("python3")
            .args(&args)
            .output()
            .expect("run python3 -m kubernetes_validate");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "kubernetes-validate --strict (Kubernetes {}) rejects {}:\n{text}",
            version.unwrap_or("newest"),
            path.display()
        );
        let passed = text.lines().filter(|l| l.contains(" passed ")).count();
        assert_eq!(
            passed,
            docs.len(),
            "every document should be validated, not skipped:\n{text}"
        );
    }
}
