//! What the deployment files say, checked against the code that reads them:
//! deploy/kubernetes (the base and the TLS overlay) and the systemd unit
//! with its environment files (cluster/leasehold.service, cluster/systemd).
//!
//! Without any tool: every file a kustomization names exists and every
//! manifest is named; the StatefulSet's replicas match the peer list, each
//! pod's id (`--id-from-hostname`, the real function) and advertised
//! address are its own peer entry; Parallel pod management and
//! `publishNotReadyAddresses` are set; probes hit `/readyz` and `/healthz`
//! on the port `--metrics-listen` binds; every `LEASEHOLD_*` variable is a
//! real `serve` flag and the whole environment parses as `leasehold serve`
//! does; the TLS overlay's paths are files `leasehold certs init` writes.
//!
//! With kubectl: both kustomizations render, and the overlay adds to the
//! base instead of replacing it. With `kubernetes-validate` (CI installs it
//! into target/py): every manifest and both renders pass `--strict` against
//! Kubernetes 1.30 and 1.37, and a typo does not. With `systemd-analyze`:
//! the unit verifies without a warning. Each tool missing prints SKIPPED.

use crate::common::BIN;
use crate::kube::kubectl;
use clap::CommandFactory;
use leasehold::cli::serve::{id_from_hostname, parse_peers, resolve_id, ServeArgs};
use serde::Deserialize;
use serde_yaml::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Kubernetes versions the manifests are validated against: the oldest
/// still in common use with `policy/v1` and sidecar-free probes, and the
/// newest kubernetes-validate knows.
const KUBE_VERSIONS: [&str; 2] = ["1.30", "1.37"];

fn k8s_dir() -> PathBuf {
    Path::new(ROOT).join("deploy/kubernetes")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every YAML document of `text` (a file may hold several).
fn docs(text: &str, what: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|d| Value::deserialize(d).unwrap_or_else(|e| panic!("{what}: {e}")))
        .filter(|v| !v.is_null())
        .collect()
}

fn yaml(path: &Path) -> Vec<Value> {
    docs(&read(path), &path.display().to_string())
}

/// `v[a][b]...`, panicking with the path when something is missing.
fn at<'a>(v: &'a Value, path: &[&str]) -> &'a Value {
    let mut cur = v;
    for (i, k) in path.iter().enumerate() {
        cur = cur
            .get(*k)
            .unwrap_or_else(|| panic!("no {} in {v:?}", path[..=i].join(".")));
    }
    cur
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    at(v, path)
        .as_str()
        .unwrap_or_else(|| panic!("{} is not a string", path.join(".")))
}

fn seq_at<'a>(v: &'a Value, path: &[&str]) -> &'a Vec<Value> {
    at(v, path)
        .as_sequence()
        .unwrap_or_else(|| panic!("{} is not a list", path.join(".")))
}

/// The resources of a kustomization directory, by `Kind/name`.
fn resources(dir: &Path) -> BTreeMap<String, Value> {
    let k = &yaml(&dir.join("kustomization.yaml"))[0];
    let mut out = BTreeMap::new();
    for r in seq_at(k, &["resources"]) {
        let path = dir.join(r.as_str().expect("resource path"));
        if path.is_dir() {
            out.extend(resources(&path));
            continue;
        }
        for d in yaml(&path) {
            let key = format!(
                "{}/{}",
                str_at(&d, &["kind"]),
                str_at(&d, &["metadata", "name"])
            );
            assert!(out.insert(key.clone(), d).is_none(), "{key} twice");
        }
    }
    out
}

/// The environment of a container as (name, value); `valueFrom` entries
/// get the value `None`.
fn env_of(container: &Value) -> Vec<(String, Option<String>)> {
    container
        .get("env")
        .and_then(Value::as_sequence)
        .into_iter()
        .flatten()
        .map(|e| {
            (
                str_at(e, &["name"]).to_string(),
                e.get("value").and_then(Value::as_str).map(str::to_string),
            )
        })
        .collect()
}

/// `leasehold serve`'s flag for each environment variable, and whether
/// it is a switch (takes no value).
fn serve_env_flags() -> BTreeMap<String, (String, bool)> {
    let cli = leasehold::cli::Cli::command();
    let serve = cli
        .get_subcommands()
        .find(|c| c.get_name() == "serve")
        .expect("serve subcommand");
    serve
        .get_arguments()
        .filter_map(|a| {
            let env = a.get_env()?.to_str()?.to_string();
            let long = a.get_long()?.to_string();
            let switch = matches!(a.get_action(), clap::ArgAction::SetTrue);
            Some((env, (long, switch)))
        })
        .collect()
}

/// Parses an environment (`LEASEHOLD_*`; others are ignored) plus `args`
/// as `leasehold serve` would, through the real command line: an unknown
/// variable or a value the flag refuses fails here.
fn parse_serve_env(env: &[(String, String)], args: &[&str], what: &str) -> ServeArgs {
    use clap::Parser;
    let flags = serve_env_flags();
    let mut argv: Vec<String> = vec!["leasehold".into(), "serve".into()];
    argv.extend(args.iter().map(|a| a.to_string()));
    for (name, value) in env.iter().filter(|(n, _)| n.starts_with("LEASEHOLD_")) {
        let (long, switch) = flags
            .get(name)
            .unwrap_or_else(|| panic!("{what}: {name} is not a variable of `leasehold serve`"));
        if *switch {
            if !matches!(value.as_str(), "" | "0" | "false" | "no" | "off") {
                argv.push(format!("--{long}"));
            }
        } else {
            argv.push(format!("--{long}={value}"));
        }
    }
    match leasehold::cli::Cli::try_parse_from(&argv) {
        Ok(cli) => match cli.command {
            leasehold::cli::Command::Serve(a) => *a,
            _ => unreachable!("parsed as serve"),
        },
        Err(e) => panic!("{what}: `{}` does not parse: {e}", argv.join(" ")),
    }
}

/// A port of a container by name or number.
fn container_port(container: &Value, port: &Value) -> u16 {
    if let Some(n) = port.as_u64() {
        return u16::try_from(n).expect("port");
    }
    let name = port.as_str().expect("port name or number");
    let p = seq_at(container, &["ports"])
        .iter()
        .find(|p| p.get("name").and_then(Value::as_str) == Some(name))
        .unwrap_or_else(|| panic!("no container port named {name}"));
    u16::try_from(at(p, &["containerPort"]).as_u64().expect("containerPort")).expect("port")
}

/// The port of HOST:PORT.
fn port_of(addr: &str) -> u16 {
    addr.rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or_else(|| panic!("{addr:?} is not HOST:PORT"))
}

/// Whether every label `selector` asks for is on `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    let want = selector.as_mapping().expect("selector map");
    !want.is_empty() && want.iter().all(|(k, v)| labels.get(k) == Some(v))
}

#[test]
fn kustomizations_name_existing_files_and_every_manifest() {
    let dir = k8s_dir();
    let base = dir.join("base");
    let k = &yaml(&base.join("kustomization.yaml"))[0];
    let listed: Vec<&str> = seq_at(k, &["resources"])
        .iter()
        .map(|r| r.as_str().expect("resource"))
        .collect();
    for r in &listed {
        assert!(
            base.join(r).is_file(),
            "base lists {r}, which does not exist"
        );
    }
    // Nothing left out: every manifest in base is applied.
    for e in std::fs::read_dir(&base).expect("read base") {
        let name = e.expect("entry").file_name().to_string_lossy().into_owned();
        if name.ends_with(".yaml") && name != "kustomization.yaml" {
            assert!(listed.contains(&name.as_str()), "base does not list {name}");
        }
    }
    let tls = dir.join("tls");
    let k = &yaml(&tls.join("kustomization.yaml"))[0];
    for r in seq_at(k, &["resources"]) {
        let p = tls.join(r.as_str().expect("resource"));
        assert!(p.join("kustomization.yaml").is_file(), "{}", p.display());
    }
    for p in seq_at(k, &["patches"]) {
        let p = tls.join(str_at(p, &["path"]));
        assert!(p.is_file(), "{}", p.display());
    }
}

#[test]
fn the_statefulset_bootstraps_its_peers_by_stable_dns() {
    let res = resources(&k8s_dir().join("base"));
    let sts = &res["StatefulSet/leasehold"];
    let name = str_at(sts, &["metadata", "name"]);
    let spec = at(sts, &["spec"]);
    let pod = at(spec, &["template"]);
    let pod_labels = at(pod, &["metadata", "labels"]);
    assert!(selects(at(spec, &["selector", "matchLabels"]), pod_labels));
    // Bootstrap needs every pod at once (no pod is Ready alone).
    assert_eq!(str_at(spec, &["podManagementPolicy"]), "Parallel");

    // The headless peer Service is the StatefulSet's, and publishes pods
    // before they are Ready.
    let peer_svc_name = str_at(spec, &["serviceName"]);
    let peer_svc = &res[&format!("Service/{peer_svc_name}")];
    assert_eq!(str_at(peer_svc, &["spec", "clusterIP"]), "None");
    assert_eq!(
        at(peer_svc, &["spec", "publishNotReadyAddresses"]).as_bool(),
        Some(true)
    );
    assert!(selects(at(peer_svc, &["spec", "selector"]), pod_labels));

    let containers = seq_at(pod, &["spec", "containers"]);
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    let args: Vec<&str> = seq_at(c, &["args"])
        .iter()
        .map(|a| a.as_str().expect("arg"))
        .collect();
    assert_eq!(args, ["serve", "--id-from-hostname"]);
    let env = env_of(c);
    let value = |n: &str| -> String {
        env.iter()
            .find(|(k, _)| k == n)
            .and_then(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("no {n} value in the container env"))
    };
    // POD_NAME from the downward API, defined before the variables that
    // use it (the kubelet expands $(VAR) from earlier entries only).
    let pod_name_at = env
        .iter()
        .position(|(k, _)| k == "POD_NAME")
        .expect("POD_NAME");
    let pod_name_src = seq_at(c, &["env"])[pod_name_at].clone();
    assert_eq!(
        str_at(&pod_name_src, &["valueFrom", "fieldRef", "fieldPath"]),
        "metadata.name"
    );
    for (i, (k, v)) in env.iter().enumerate() {
        if v.as_deref().is_some_and(|v| v.contains("$(POD_NAME)")) {
            assert!(i > pod_name_at, "{k} uses $(POD_NAME) before it is defined");
        }
    }

    // The peers are exactly the pods: replicas match, and pod N (node
    // N + 1 by the real --id-from-hostname) advertises its own entry.
    let peers = parse_peers(&value("LEASEHOLD_PEERS")).expect("LEASEHOLD_PEERS parses");
    let replicas = at(spec, &["replicas"]).as_u64().expect("replicas");
    assert_eq!(peers.len() as u64, replicas, "replicas vs LEASEHOLD_PEERS");
    let grpc_port = container_port(c, &Value::from("grpc"));
    assert_eq!(port_of(&value("LEASEHOLD_LISTEN")), grpc_port);
    for ordinal in 0..replicas {
        let pod_name = format!("{name}-{ordinal}");
        let pod_env: Vec<(String, String)> = env
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), v.as_ref()?.replace("$(POD_NAME)", &pod_name))))
            .collect();
        let mut a = parse_serve_env(
            &pod_env,
            &["--id-from-hostname", "--hostname", &pod_name],
            &format!("pod {pod_name}"),
        );
        let id = resolve_id(&mut a).expect("id from the pod name");
        assert_eq!(id_from_hostname(&pod_name), Ok(ordinal + 1));
        assert_eq!(id, ordinal + 1);
        let expected = format!("{pod_name}.{peer_svc_name}:{grpc_port}");
        assert_eq!(peers.get(&id), Some(&expected), "peer entry of node {id}");
        assert_eq!(a.advertise.as_deref(), Some(expected.as_str()));
    }
    for port in seq_at(peer_svc, &["spec", "ports"]) {
        assert_eq!(container_port(c, at(port, &["targetPort"])), grpc_port);
        assert_eq!(at(port, &["port"]).as_u64(), Some(u64::from(grpc_port)));
    }

    // Probes on the port --metrics-listen binds, at the right paths.
    let metrics_port = port_of(&value("LEASEHOLD_METRICS_LISTEN"));
    assert_eq!(container_port(c, &Value::from("metrics")), metrics_port);
    for (probe, path) in [
        ("readinessProbe", "/readyz"),
        ("livenessProbe", "/healthz"),
        ("startupProbe", "/healthz"),
    ] {
        let get = at(c, &[probe, "httpGet"]);
        assert_eq!(str_at(get, &["path"]), path, "{probe}");
        assert_eq!(
            container_port(c, at(get, &["port"])),
            metrics_port,
            "{probe}"
        );
        assert!(get.get("scheme").is_none_or(|s| *s == "HTTP"), "{probe}");
    }
    // /readyz waits up to a second for the apply.
    assert!(at(c, &["readinessProbe", "timeoutSeconds"]).as_u64() >= Some(2));

    // The client Service reaches the same ports.
    let svc = &res["Service/leasehold"];
    assert!(selects(at(svc, &["spec", "selector"]), pod_labels));
    let svc_ports: Vec<u16> = seq_at(svc, &["spec", "ports"])
        .iter()
        .map(|p| container_port(c, at(p, &["targetPort"])))
        .collect();
    assert_eq!(svc_ports, [grpc_port, metrics_port]);

    // Data on the claim template, at LEASEHOLD_DATA_DIR.
    let data_dir = value("LEASEHOLD_DATA_DIR");
    let mount = seq_at(c, &["volumeMounts"])
        .iter()
        .find(|m| str_at(m, &["mountPath"]) == data_dir)
        .expect("a volume mounted at LEASEHOLD_DATA_DIR");
    let claim = seq_at(spec, &["volumeClaimTemplates"])
        .iter()
        .find(|t| str_at(t, &["metadata", "name"]) == str_at(mount, &["name"]))
        .expect("the data mount is a claim template");
    assert_eq!(seq_at(claim, &["spec", "accessModes"])[0], "ReadWriteOnce");

    // Non-root, read-only root filesystem, bounded memory.
    assert_eq!(
        at(pod, &["spec", "securityContext", "runAsNonRoot"]).as_bool(),
        Some(true)
    );
    assert_eq!(
        at(c, &["securityContext", "readOnlyRootFilesystem"]).as_bool(),
        Some(true)
    );
    for r in [
        &["resources", "requests", "cpu"][..],
        &["resources", "requests", "memory"],
        &["resources", "limits", "memory"],
    ] {
        at(c, r);
    }

    // One voluntary disruption at a time.
    let pdb = &res["PodDisruptionBudget/leasehold"];
    assert_eq!(at(pdb, &["spec", "maxUnavailable"]).as_u64(), Some(1));
    assert!(selects(
        at(pdb, &["spec", "selector", "matchLabels"]),
        pod_labels
    ));
}

#[test]
fn the_tls_overlay_serves_the_files_certs_init_writes() {
    let patch = &yaml(&k8s_dir().join("tls/statefulset-tls.patch.yaml"))[0];
    let spec = at(patch, &["spec", "template", "spec"]);
    let c = &seq_at(spec, &["containers"])[0];
    let env: Vec<(String, String)> = env_of(c)
        .into_iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.unwrap_or_else(|| panic!("{k} without a value")),
            )
        })
        .collect();
    // The secret's mount.
    let mount = seq_at(c, &["volumeMounts"])
        .iter()
        .find(|m| str_at(m, &["name"]) == "pki")
        .expect("pki mount");
    let mount_path = str_at(mount, &["mountPath"]);
    let volume = seq_at(spec, &["volumes"])
        .iter()
        .find(|v| str_at(v, &["name"]) == "pki")
        .expect("pki volume");
    assert_eq!(str_at(volume, &["secret", "secretName"]), "leasehold-pki");

    // The files of `leasehold certs init` for three nodes, one user and
    // one token user, as README.md tells.
    let tmp = tempfile::tempdir().expect("tempdir");
    let pki = tmp.path().join("pki");
    let out = Command::new(BIN)
        .arg("certs")
        .arg("init")
        .arg("--dir")
        .arg(&pki)
        .args(["--node", "1=leasehold-0.leasehold-peer"])
        .args(["--node", "2=leasehold-1.leasehold-peer"])
        .args(["--node", "3=leasehold-2.leasehold-peer"])
        .args(["--client", "admin:leasehold:admins"])
        .args(["--token-user", "kubectl:leasehold:admins"])
        .output()
        .expect("run leasehold certs init");
    assert!(out.status.success(), "{out:?}");

    for id in 1..=3u64 {
        let pod = format!("leasehold-{}", id - 1);
        let mut a = parse_serve_env(
            &env,
            &["--id-from-hostname", "--hostname", &pod],
            &format!("TLS env of {pod}"),
        );
        assert_eq!(resolve_id(&mut a), Ok(id));
        let files = leasehold::cli::serve::auth_config(&a).expect("TLS configuration");
        let tls = files.tls.expect("TLS on");
        assert!(!tls.client_cert_auth, "tokens (kubectl) keep working");
        let mut paths = vec![
            tls.cert.clone(),
            tls.key.clone(),
            tls.peer_ca.clone(),
            tls.peer_cert.clone(),
            tls.peer_key.clone(),
        ];
        paths.extend(tls.client_ca.clone());
        paths.extend(files.token_file.clone());
        paths.extend(files.rules_file.clone());
        assert_eq!(
            tls.cert,
            Path::new(mount_path).join(format!("node-{id}.crt"))
        );
        for p in paths {
            let rel = p
                .strip_prefix(mount_path)
                .unwrap_or_else(|_| panic!("{} is outside the secret's mount", p.display()));
            assert!(
                pki.join(rel).is_file(),
                "certs init wrote no {}",
                rel.display()
            );
        }
    }
}

/// kubernetes-validate: `LEASEHOLD_KUBERNETES_VALIDATE`, the PATH, or the
/// venv `.ci/run` makes (target/py).
fn kubernetes_validate() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("LEASEHOLD_KUBERNETES_VALIDATE") {
        return Some(PathBuf::from(p));
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join("kubernetes-validate"))
                .find(|p| p.is_file())
        })
        .or_else(|| {
            Some(Path::new(ROOT).join("target/py/bin/kubernetes-validate")).filter(|p| p.is_file())
        })
}

/// Runs kubernetes-validate --strict on `file` for every version; Ok if
/// it exits 0 with a "passed" line per document and version and no WARN
/// or ERROR line, else the output.
fn validate(bin: &Path, file: &Path) -> Result<(), String> {
    let mut cmd = Command::new(bin);
    cmd.arg("--strict");
    for v in KUBE_VERSIONS {
        cmd.args(["-k", v]);
    }
    let out = cmd.arg(file).output().expect("run kubernetes-validate");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let documents = docs(&read(file), &file.display().to_string()).len();
    let passed = text.lines().filter(|l| l.contains(" passed ")).count();
    let bad = text
        .lines()
        .any(|l| l.starts_with("WARN") || l.starts_with("ERROR"));
    if out.status.success() && !bad && passed == documents * KUBE_VERSIONS.len() {
        Ok(())
    } else {
        Err(format!("{}: {}\n{text}", file.display(), out.status))
    }
}

#[test]
fn the_manifests_render_and_validate() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut to_validate: Vec<PathBuf> = std::fs::read_dir(k8s_dir().join("base"))
        .expect("read base")
        .map(|e| e.expect("entry").path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "yaml")
                && p.file_name().is_some_and(|n| n != "kustomization.yaml")
        })
        .collect();
    to_validate.sort();

    match kubectl() {
        None => eprintln!("SKIPPED: kubectl not on PATH: the kustomizations are not rendered"),
        Some(kubectl) => {
            let mut rendered = BTreeMap::new();
            for variant in ["base", "tls"] {
                let out = Command::new(&kubectl)
                    .arg("kustomize")
                    .arg(k8s_dir().join(variant))
                    .output()
                    .expect("run kubectl kustomize");
                let text = String::from_utf8_lossy(&out.stdout).into_owned();
                assert!(
                    out.status.success(),
                    "kubectl kustomize {variant}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                let path = tmp.path().join(format!("{variant}.yaml"));
                std::fs::write(&path, &text).expect("write render");
                to_validate.push(path);
                rendered.insert(variant, docs(&text, variant));
            }
            // The overlay adds to the base: same resources, the base's
            // env kept, the TLS variables and the secret's volume added.
            let sts = |v: &str| {
                rendered[v]
                    .iter()
                    .find(|d| d["kind"] == "StatefulSet")
                    .cloned()
                    .expect("a StatefulSet")
            };
            assert_eq!(rendered["base"].len(), rendered["tls"].len());
            let (base, tls) = (sts("base"), sts("tls"));
            let names = |s: &Value| -> Vec<String> {
                env_of(&seq_at(s, &["spec", "template", "spec", "containers"])[0])
                    .into_iter()
                    .map(|(k, _)| k)
                    .collect()
            };
            let (base_env, tls_env) = (names(&base), names(&tls));
            for n in &base_env {
                assert!(tls_env.contains(n), "the TLS render lost {n}");
            }
            assert!(tls_env.iter().any(|n| n == "LEASEHOLD_CERT_FILE"));
            assert_eq!(
                seq_at(&tls, &["spec", "template", "spec", "volumes"]).len(),
                1,
                "the pki volume"
            );
        }
    }

    let Some(bin) = kubernetes_validate() else {
        eprintln!(
            "SKIPPED: kubernetes-validate not found (PATH, LEASEHOLD_KUBERNETES_VALIDATE or \
             target/py): the manifests are not checked against the Kubernetes schemas"
        );
        return;
    };
    for f in &to_validate {
        validate(&bin, f).unwrap_or_else(|e| panic!("{e}"));
    }
    // Control: a misspelt field fails under --strict, so the check can fail.
    let sts = read(&k8s_dir().join("base/statefulset.yaml"));
    let typo = tmp.path().join("typo.yaml");
    std::fs::write(
        &typo,
        sts.replace("podManagementPolicy", "podManagmentPolicy"),
    )
    .expect("write typo");
    let e = validate(&bin, &typo).expect_err("a misspelt field must not validate");
    assert!(e.contains("podManagmentPolicy"), "{e}");
    eprintln!(
        "kubernetes-validate --strict ({}): {} files passed",
        KUBE_VERSIONS.join(", "),
        to_validate.len()
    );
}

/// `KEY=VALUE` lines of an environment file (comments and blanks skipped).
fn env_file(path: &Path) -> Vec<(String, String)> {
    read(path)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l
                .split_once('=')
                .unwrap_or_else(|| panic!("{}: {l:?} is not KEY=VALUE", path.display()));
            (k.to_string(), v.to_string())
        })
        .collect()
}

/// `Key=value` settings of a unit file, in order (repeated keys kept).
fn unit_settings(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn the_systemd_unit_and_env_files_make_a_three_node_cluster() {
    let cluster = Path::new(ROOT).join("cluster");
    let unit = read(&cluster.join("leasehold.service"));
    let settings = unit_settings(&unit);
    let get = |k: &str| -> Vec<&str> {
        settings
            .iter()
            .filter(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    assert_eq!(get("ExecStart"), ["/usr/local/bin/leasehold serve"]);
    assert_eq!(
        get("EnvironmentFile"),
        ["/etc/leasehold/cluster.env", "/etc/leasehold/node.env"]
    );
    assert_eq!(get("KillSignal"), ["SIGTERM"]);
    assert_eq!(get("Restart"), ["on-failure"]);
    assert_eq!(get("StateDirectory"), ["leasehold"]);
    assert_eq!(get("LimitNOFILE"), ["65536"]);
    let stop: u64 = get("TimeoutStopSec")[0].parse().expect("seconds");
    assert!(stop >= 10, "TimeoutStopSec {stop}");
    // The data directory is the state directory.
    let unit_env: Vec<(String, String)> = get("Environment")
        .iter()
        .map(|e| {
            let (k, v) = e.split_once('=').expect("Environment=K=V");
            (k.to_string(), v.to_string())
        })
        .collect();
    assert!(unit_env.contains(&(
        "LEASEHOLD_DATA_DIR".to_string(),
        "/var/lib/leasehold".to_string()
    )));

    // Each machine: the unit's Environment=, then cluster.env, then its
    // node.env (systemd's order: later assignments win).
    let shared = env_file(&cluster.join("systemd/cluster.env"));
    let mut all_peers = None;
    for n in 1..=3u64 {
        let node = env_file(&cluster.join(format!("systemd/node{n}.env")));
        let env: Vec<(String, String)> = unit_env
            .iter()
            .chain(&shared)
            .chain(&node)
            .cloned()
            .collect();
        let mut a = parse_serve_env(&env, &[], &format!("machine {n}"));
        assert_eq!(resolve_id(&mut a), Ok(n));
        let peers = parse_peers(&a.peers).expect("peers");
        assert_eq!(
            peers.get(&n),
            a.advertise.as_ref(),
            "node {n} advertises its peer entry"
        );
        assert!(
            a.metrics_listen.is_some(),
            "node {n}: probes need --metrics-listen"
        );
        let tls = leasehold::cli::serve::auth_config(&a)
            .expect("auth")
            .tls
            .expect("TLS on");
        assert_eq!(
            tls.cert,
            PathBuf::from(format!("/etc/leasehold/pki/node-{n}.crt"))
        );
        if let Some(p) = &all_peers {
            assert_eq!(p, &peers, "every machine has the same peers");
        }
        all_peers = Some(peers);
    }
    assert_eq!(all_peers.map(|p| p.len()), Some(3));

    let Some(analyze) = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("systemd-analyze"))
            .find(|p| p.is_file())
    }) else {
        eprintln!("SKIPPED: systemd-analyze not on PATH: the unit is not verified");
        return;
    };
    // Verified with ExecStart pointing at this build (verify checks that
    // the program exists); any message is a failure (an unknown key is
    // only a warning to systemd).
    let tmp = tempfile::tempdir().expect("tempdir");
    let copy = tmp.path().join("leasehold.service");
    std::fs::write(&copy, unit.replace("/usr/local/bin/leasehold", BIN)).expect("write unit");
    let out = Command::new(analyze)
        .arg("verify")
        .arg(&copy)
        .output()
        .expect("run systemd-analyze");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.trim().is_empty(),
        "systemd-analyze verify: {text}"
    );
}
