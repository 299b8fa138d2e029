//! The backup store of one real `tb-agent` whose replica is not running (systemd mode with a unit
//! that does not exist, so the agent never starts anything): backups are real copies of a real
//! file, and everything in the backup directory is treated as untrusted input. No cluster is
//! needed, so these run in seconds.
//!
//! Covered: tampered manifests and planted links serve, verify and restore nothing; a clean
//! disaster-recovery restore; owner-only directories and files; the order of backups and
//! retention (`keep_last`, `max_age_days`) after a stepped clock and with older-format
//! manifests; sparse copies; hook output bounded while it is read.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::Ports;
use serde_json::Value;
use tb_proto::auth::hash_secret_hex;

const OPERATOR: &str = "operator-secret-0123456789";
const SECRET_TEXT: &str = "TOP-SECRET-not-for-the-backup-api";
const BACKUP_TIMEOUT: Duration = Duration::from_secs(60);
const DAY_MS: u64 = 86_400_000;

use common::StandaloneAgent as Agent;

impl Agent {
    fn data_file(&self) -> PathBuf {
        self.dir.join("data/0_0.tigerbeetle")
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    fn request(&self, method: &str, path: &str, body: Option<&str>) -> (u16, Vec<u8>) {
        let client = common::http_client(Duration::from_secs(30));
        let mut builder = match method {
            "GET" => client.get(self.url(path)),
            "DELETE" => client.delete(self.url(path)),
            _ => client.post(self.url(path)),
        };
        builder = builder.bearer_auth(OPERATOR);
        if let Some(body) = body {
            builder = builder
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let response = builder.send().unwrap();
        let status = response.status().as_u16();
        (status, response.bytes().unwrap().to_vec())
    }

    fn json(&self, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
        let (status, bytes) = self.request(method, path, body);
        let value = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
            panic!(
                "{method} {path}: {status}, not JSON: {}",
                String::from_utf8_lossy(&bytes)
            )
        });
        (status, value)
    }

    /// A backup, run to its end; returns the backup id and the finished job.
    fn backup(&self) -> (String, Value) {
        let (status, accepted) = self.json("POST", "/v1/backups", None);
        assert_eq!(status, 202, "{accepted}");
        let job_path = format!("/v1/jobs/{}", accepted["job_id"].as_str().unwrap());
        let job = common::wait_for(
            "the backup job to end",
            BACKUP_TIMEOUT,
            Duration::from_millis(20),
            || {
                let (_, job) = self.json("GET", &job_path, None);
                if job["state"] == "running" {
                    Err(job)
                } else {
                    Ok(job)
                }
            },
        );
        assert_eq!(job["state"], "succeeded", "{job}");
        (accepted["backup_id"].as_str().unwrap().to_string(), job)
    }

    fn listed_ids(&self) -> Vec<String> {
        let (status, listed) = self.json("GET", "/v1/backups", None);
        assert_eq!(status, 200, "{listed}");
        listed
            .as_array()
            .unwrap()
            .iter()
            .map(|backup| backup["id"].as_str().unwrap().to_string())
            .collect()
    }
}

/// An agent on `slot`'s ports whose replica's data file holds `content`, with `backup` as the
/// body of its `[backup]` section (`dir` is set here, two levels the agent must create).
fn spawn(name: &str, slot: u16, content: &[u8], backup: &str) -> Agent {
    let ports = Ports::for_test(slot);
    let dir = std::env::temp_dir().join(format!("tb-tests-store-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("data")).unwrap();
    std::fs::write(dir.join("data/0_0.tigerbeetle"), content).unwrap();
    std::fs::write(dir.join("secret.txt"), SECRET_TEXT).unwrap();
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:{agent}\"\n\
         [replica]\ncluster_id = \"7\"\nindex = 0\ncount = 1\naddresses = [\"127.0.0.1:{replica}\"]\n\
         data_file = \"{data}\"\nstatsd_port = {statsd}\n\
         [replica.run]\nmode = \"systemd\"\nunit = \"tb-tests-absent.service\"\nbinary = \"{binary}\"\n\
         [[tokens]]\nname = \"operator\"\nscopes = [\"read\", \"backup\", \"control\"]\nsha256 = \"{hash}\"\n\
         [backup]\ndir = \"{backups}\"\nfree_margin_bytes = 0\n{backup}\n",
        agent = ports.agent,
        replica = ports.replica,
        statsd = ports.statsd,
        data = dir.join("data/0_0.tigerbeetle").display(),
        hash = hash_secret_hex(OPERATOR),
        binary = common::tigerbeetle_bin().display(),
        backups = dir.join("store/backups").display(),
    );
    let config = dir.join("agent.toml");
    std::fs::write(&config, text).unwrap();
    let child = Command::new(common::bin_dir().join("tb-agent"))
        .args(["serve", "--config", config.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let agent = Agent {
        child,
        url: format!("http://127.0.0.1:{}", ports.agent),
        dir,
    };
    common::wait_live(
        &common::http_client(Duration::from_secs(5)),
        &agent.url(""),
        None,
    );
    agent
}

fn backups_dir(agent: &Agent) -> PathBuf {
    agent.dir.join("store/backups")
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o7777
}

/// The backup root (and its parent, both created by the agent), every backup directory and
/// every file in them are owner-only.
fn assert_owner_only(agent: &Agent) {
    let root = backups_dir(agent);
    for dir in [root.parent().unwrap(), root.as_path()] {
        assert_eq!(mode(dir), 0o700, "{}", dir.display());
    }
    assert_eq!(mode(&root.join(".sequence")), 0o600);
    let mut files = 0;
    for entry in std::fs::read_dir(&root).unwrap() {
        let path = entry.unwrap().path();
        if !path.is_dir() {
            continue;
        }
        assert_eq!(mode(&path), 0o700, "{}", path.display());
        for file in std::fs::read_dir(&path).unwrap() {
            let file = file.unwrap().path();
            assert_eq!(mode(&file), 0o600, "{}", file.display());
            files += 1;
        }
    }
    assert!(files > 0, "no backup files in {}", root.display());
}

fn read_manifest(agent: &Agent, id: &str) -> Value {
    let path = backups_dir(agent).join(id).join("manifest.json");
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// A copy of backup `from` (stored file, verification and all) under a new id, with its manifest
/// changed by `edit`: a backup written by an earlier run, or brought back from off-host storage.
fn plant(agent: &Agent, from: &str, id: &str, edit: impl FnOnce(&mut Value)) {
    let (source, target) = (backups_dir(agent).join(from), backups_dir(agent).join(id));
    std::fs::create_dir(&target).unwrap();
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o700)).unwrap();
    for entry in std::fs::read_dir(&source).unwrap() {
        let entry = entry.unwrap();
        // std::fs::copy keeps the 0600 mode.
        std::fs::copy(entry.path(), target.join(entry.file_name())).unwrap();
    }
    let mut manifest = read_manifest(agent, from);
    manifest["backup_id"] = id.into();
    edit(&mut manifest);
    std::fs::write(
        target.join("manifest.json"),
        serde_json::to_vec_pretty(&manifest).unwrap(),
    )
    .unwrap();
}

fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn pseudo_random_bytes(length: usize) -> Vec<u8> {
    (0..length as u64)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

/// Fault 4: a manifest is untrusted input. Whatever it names (a relative path out of the
/// backup, an absolute path) and whatever links are planted in the backup directory, the
/// download, verify and restore endpoints serve and change nothing, and say why. A backup that
/// is what it claims restores (disaster recovery) through the API.
#[test]
fn tampered_backups_serve_nothing_and_a_clean_one_restores() {
    let content = pseudo_random_bytes(2 * 1024 * 1024);
    let agent = spawn("tamper", 70, &content, "keep_last = 100");
    let (id, _) = agent.backup();
    let secret = agent.dir.join("secret.txt");
    let confirmed = r#"{"mode": "disaster-recovery", "cluster_id": "7"}"#;

    let mut tampered = Vec::new();
    for (suffix, file) in [
        ("00000001", "../../../secret.txt".to_string()),
        ("00000002", "../../../../../../../../etc/shadow".to_string()),
        ("00000003", secret.display().to_string()),
        ("00000004", "..".to_string()),
        ("00000005", "manifest.json".to_string()),
    ] {
        let bad = format!("{}{suffix}", &id[..id.len() - 8]);
        plant(&agent, &id, &bad, |manifest| manifest["file"] = file.into());
        tampered.push((bad, "invalid manifest"));
    }
    // A valid manifest whose stored file is a link out of the backup.
    let linked = format!("{}0000000a", &id[..id.len() - 8]);
    plant(&agent, &id, &linked, |_| {});
    let stored = backups_dir(&agent)
        .join(&linked)
        .join("data.tigerbeetle.zst");
    std::fs::remove_file(&stored).unwrap();
    std::os::unix::fs::symlink(&secret, &stored).unwrap();
    tampered.push((linked, "symbolic link"));
    // A backup directory that is a link (to a copy whose manifest names it).
    let aliased = format!("{}0000000b", &id[..id.len() - 8]);
    let target = format!("{}0000000c", &id[..id.len() - 8]);
    plant(&agent, &id, &target, |manifest| {
        manifest["backup_id"] = aliased.clone().into()
    });
    std::fs::rename(
        backups_dir(&agent).join(&target),
        agent.dir.join("elsewhere"),
    )
    .unwrap();
    std::os::unix::fs::symlink(
        agent.dir.join("elsewhere"),
        backups_dir(&agent).join(&aliased),
    )
    .unwrap();
    tampered.push((aliased, "symbolic link"));

    let data_hash = blake3::hash(&std::fs::read(agent.data_file()).unwrap());
    for (bad, reason) in &tampered {
        let (status, body) = agent.request("GET", &format!("/v1/backups/{bad}/file"), None);
        let text = String::from_utf8_lossy(&body);
        assert!(!text.contains(SECRET_TEXT), "{bad}: the secret was served");
        assert_eq!(status, 409, "{bad}: {text}");
        assert!(text.contains(reason), "{bad}: wanted {reason:?} in {text}");
        for (path, body) in [
            (format!("/v1/backups/{bad}/verify"), None),
            (format!("/v1/backups/{bad}/restore"), Some(confirmed)),
            (format!("/v1/backups/{bad}"), None),
        ] {
            let method = if body.is_some() || path.ends_with("verify") {
                "POST"
            } else {
                "GET"
            };
            let (status, answer) = agent.json(method, &path, body);
            if status == 200 && method == "GET" {
                // A valid manifest is shown, with the failed verification and its reason.
                assert_eq!(answer["verification"]["ok"], false, "{answer}");
                let detail = answer["verification"]["detail"].as_str().unwrap();
                assert!(detail.contains(reason), "{answer}");
                continue;
            }
            assert_eq!(status, 409, "{path}: {answer}");
            // A verification that cannot read the stored file records the backup as corrupt.
            assert!(
                answer["error"] == "refused"
                    || (answer["error"] == "corrupt" && path.ends_with("verify")),
                "{path}: {answer}"
            );
            assert!(
                answer["message"].as_str().unwrap().contains(reason),
                "{path}: wanted {reason:?} in {answer}"
            );
        }
    }
    assert_eq!(
        blake3::hash(&std::fs::read(agent.data_file()).unwrap()),
        data_hash,
        "a refused restore changed the data file"
    );
    // Backups with invalid manifests or linked directories are not listed; the one whose
    // manifest is valid is, as failed verification.
    let mut listed = agent.listed_ids();
    listed.sort();
    assert_eq!(listed, [tampered[5].0.clone(), id.clone()]);
    // Tampered backups can be deleted: a linked directory goes as a link, its target stays.
    for (bad, _) in &tampered {
        let (status, answer) = agent.json("DELETE", &format!("/v1/backups/{bad}"), None);
        assert_eq!(status, 200, "{bad}: {answer}");
        assert!(!backups_dir(&agent).join(bad).exists(), "{bad}");
    }
    assert!(agent.dir.join("elsewhere/manifest.json").exists());
    assert!(secret.exists());
    assert_eq!(agent.listed_ids(), std::slice::from_ref(&id));

    // The real backup downloads, and restores: the data file, changed since, is put back to
    // the backup's bytes, and the changed one is kept aside.
    let (status, body) = agent.request("GET", &format!("/v1/backups/{id}/file"), None);
    assert_eq!(status, 200);
    assert_eq!(zstd::decode_all(&body[..]).unwrap(), content);
    let changed = pseudo_random_bytes(3 * 1024 * 1024 + 5);
    std::fs::write(agent.data_file(), &changed).unwrap();
    let (status, restored) = agent.json(
        "POST",
        &format!("/v1/backups/{id}/restore"),
        Some(confirmed),
    );
    assert_eq!(status, 200, "{restored}");
    assert_eq!(std::fs::read(agent.data_file()).unwrap(), content);
    assert_eq!(mode(&agent.data_file()), 0o600);
    let aside = restored["previous_moved_to"].as_str().unwrap();
    assert_eq!(std::fs::read(aside).unwrap(), changed);
}

/// Fault 5 and fault 7: a backup taken before the clock was stepped back by a day has the later
/// id and creation time, and backups taken back to back share a second; the list and retention
/// go by the manifests' sequence, so the newest backup survives. Every directory the agent
/// creates is 0700 and every file 0600.
#[test]
fn backups_are_owner_only_and_ordered_by_sequence_whatever_the_clock() {
    let content = pseudo_random_bytes(4 * 1024 * 1024);
    let agent = spawn("order", 71, &content, "keep_last = 2");
    let (first, _) = agent.backup();
    assert_owner_only(&agent);
    let sequence = read_manifest(&agent, &first)["sequence"].as_u64().unwrap();

    let ahead = "20991231T235959Z-r0-ffffffff";
    plant(&agent, &first, ahead, |manifest| {
        manifest["created_unix_ms"] = (now_unix_ms() + DAY_MS).into();
        manifest["sequence"] = (sequence + 1).into();
    });
    assert_eq!(agent.listed_ids(), [ahead.to_string(), first.clone()]);

    // Two backups back to back, usually within one second.
    let (second, _) = agent.backup();
    assert_eq!(agent.listed_ids(), [second.clone(), ahead.to_string()]);
    let (third, _) = agent.backup();
    assert_eq!(agent.listed_ids(), [third.clone(), second.clone()]);
    assert_eq!(
        read_manifest(&agent, &third)["sequence"].as_u64(),
        Some(sequence + 3)
    );
    assert_owner_only(&agent);

    // Verification rewrites its record: still owner-only.
    let (status, verification) = agent.json("POST", &format!("/v1/backups/{third}/verify"), None);
    assert_eq!(status, 200, "{verification}");
    assert_owner_only(&agent);
}

/// Retention's `max_age_days`, with manifests of the older format (no sequence) beside new
/// ones, and an uncompressed backup of a sparse data file stored sparse.
#[test]
fn max_age_days_and_older_manifests() {
    // 64 MiB, mostly holes and zeros, as a young TigerBeetle data file is.
    let mut content = vec![0u8; 64 * 1024 * 1024];
    content[..1024 * 1024].copy_from_slice(&pseudo_random_bytes(1024 * 1024));
    content[40 * 1024 * 1024..40 * 1024 * 1024 + 8192].fill(7);
    let agent = spawn(
        "age",
        72,
        &content,
        "keep_last = 10\nmax_age_days = 30\ncompress = false",
    );
    let (first, _) = agent.backup();
    let stored = backups_dir(&agent).join(&first).join("data.tigerbeetle");
    assert_eq!(std::fs::read(&stored).unwrap(), content);
    let allocated_bytes = std::fs::metadata(&stored).unwrap().blocks() * 512;
    assert!(
        allocated_bytes < 4 * 1024 * 1024,
        "the copy of a 64 MiB file with 1 MiB of data allocated {allocated_bytes} bytes"
    );
    let sequence = read_manifest(&agent, &first)["sequence"].as_u64().unwrap();

    let now = now_unix_ms();
    let legacy_old = "20200101T000000Z-r0-00000001";
    let legacy_young = "20991231T235959Z-r0-00000002";
    let sequenced_old = "20210101T000000Z-r0-00000003";
    plant(&agent, &first, legacy_old, |manifest| {
        manifest.as_object_mut().unwrap().remove("sequence");
        manifest["created_unix_ms"] = (now - 60 * DAY_MS).into();
    });
    plant(&agent, &first, legacy_young, |manifest| {
        manifest.as_object_mut().unwrap().remove("sequence");
        manifest["created_unix_ms"] = (now - DAY_MS).into();
    });
    plant(&agent, &first, sequenced_old, |manifest| {
        manifest["created_unix_ms"] = (now - 40 * DAY_MS).into();
        manifest["sequence"] = (sequence + 1).into();
    });
    // Older-format manifests order before every sequenced one, by creation time.
    assert_eq!(
        agent.listed_ids(),
        [sequenced_old, &first, legacy_young, legacy_old]
    );

    let (second, _) = agent.backup();
    assert_eq!(agent.listed_ids(), [&second, &first, legacy_young]);
    assert_eq!(
        read_manifest(&agent, &second)["sequence"].as_u64(),
        Some(sequence + 2)
    );
    assert_owner_only(&agent);
}

/// Fault 12 (hook output): a hook that prints 256 MiB costs the agent no more memory than the
/// 16 KiB it keeps; the output kept is the tail.
#[test]
fn hook_output_is_cut_while_read() {
    let hook = "[[backup.hooks]]\nname = \"loud\"\ncommand = [\"sh\", \"-c\", \
                \"head -c 268435456 /dev/zero | tr '\\\\0' x; echo; echo END\"]\ntimeout_ms = 60000\n";
    let agent = spawn(
        "hook",
        73,
        &pseudo_random_bytes(1024 * 1024),
        &format!("keep_last = 2\n{hook}"),
    );
    let (id, _) = agent.backup();
    let (_, record) = agent.json("GET", &format!("/v1/backups/{id}"), None);
    let hook = &record["hooks"][0];
    assert_eq!(hook["ok"], true, "{hook}");
    let output = hook["output"].as_str().unwrap();
    assert_eq!(output.len(), 16 * 1024);
    assert!(
        output.ends_with("xxx\nEND\n"),
        "{}",
        &output[output.len() - 16..]
    );
    let status = std::fs::read_to_string(format!("/proc/{}/status", agent.child.id())).unwrap();
    let peak_kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    assert!(
        peak_kib < 128 * 1024,
        "the agent's memory peaked at {peak_kib} KiB while a hook printed 256 MiB"
    );
}
