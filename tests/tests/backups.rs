//! Backups, verification, restore refusals, crash safety, a full disk and recover, against real
//! 3-replica clusters brought up by `tbctl local up`.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Cluster, Ports, tbctl};
use serde_json::Value;

/// A backup copies a 1 GiB data file, hashes and compresses it: well under this here.
const BACKUP_TIMEOUT: Duration = Duration::from_secs(300);

fn start_backup(cluster: &Cluster, replica: u8) -> (String, String) {
    let response = cluster.post(replica, "/v1/backups", Some(&cluster.admin_token), None);
    assert_eq!(response.status(), 202, "{:?}", response.text());
    let accepted: Value = response.json().unwrap();
    (
        accepted["job_id"].as_str().unwrap().to_string(),
        accepted["backup_id"].as_str().unwrap().to_string(),
    )
}

/// Posts as admin and expects a 409 whose message gives `reason`.
fn assert_refused(cluster: &Cluster, replica: u8, path: &str, body: Option<&str>, reason: &str) {
    let response = cluster.post(replica, path, Some(&cluster.admin_token), body);
    assert_eq!(response.status(), 409, "{path}");
    let answer: Value = response.json().unwrap();
    assert!(
        answer["message"].as_str().unwrap().contains(reason),
        "{answer}"
    );
}

fn backups(cluster: &Cluster, replica: u8) -> Vec<Value> {
    let listed: Value = cluster
        .get(replica, "/v1/backups", Some(&cluster.admin_token))
        .json()
        .unwrap();
    listed.as_array().unwrap().clone()
}

/// Writes transfers without pause until `stop`; returns (requests, failures, longest gap between
/// two committed requests).
fn write_continuously(
    cluster_id: u128,
    addresses: String,
    stop: Arc<AtomicBool>,
    committed: Arc<AtomicU64>,
) -> (u64, Vec<String>, Duration) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let client = tigerbeetle_unofficial::Client::new(cluster_id, &addresses).unwrap();
        let (debit, credit): (u128, u128) = (rand_id(), rand_id());
        let accounts = vec![
            tigerbeetle_unofficial::Account::new(debit, 1, 1),
            tigerbeetle_unofficial::Account::new(credit, 1, 1),
        ];
        tokio::time::timeout(Duration::from_secs(30), client.create_accounts(accounts))
            .await
            .expect("create_accounts answered")
            .expect("accounts created");
        let (mut requests, mut failures) = (0u64, Vec::new());
        let mut last_commit = Instant::now();
        let mut longest_gap = Duration::ZERO;
        while !stop.load(Ordering::Relaxed) {
            let transfers: Vec<_> = (0..8)
                .map(|_| {
                    tigerbeetle_unofficial::Transfer::new(rand_id())
                        .with_debit_account_id(debit)
                        .with_credit_account_id(credit)
                        .with_amount(1)
                        .with_ledger(1)
                        .with_code(1)
                })
                .collect();
            requests += 1;
            match tokio::time::timeout(Duration::from_secs(30), client.create_transfers(transfers))
                .await
            {
                Ok(Ok(())) => {
                    longest_gap = longest_gap.max(last_commit.elapsed());
                    last_commit = Instant::now();
                    committed.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Err(error)) => failures.push(format!("{error:?}")),
                Err(_) => failures.push("no answer within 30 s".into()),
            }
        }
        (requests, failures, longest_gap)
    })
}

fn rand_id() -> u128 {
    // Ids must be non-zero and below u128::MAX; the time keeps runs apart.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    (nanos << 32) | u128::from(std::process::id()) | 1
}

#[test]
fn backup_under_load_verify_corruption_and_refusals() {
    let cluster = Cluster::up("backup", Ports::for_test(3));
    cluster.wait_all_ready();
    let admin = cluster.admin_token.clone();

    // A backup of replica 1 while a client writes without pause: no request fails, and the
    // cluster keeps committing.
    let stop = Arc::new(AtomicBool::new(false));
    let cluster_id: u128 = cluster.state.cluster_id.parse().unwrap();
    let addresses = cluster
        .state
        .replicas
        .iter()
        .map(|replica| replica.address.clone())
        .collect::<Vec<_>>()
        .join(",");
    let committed = Arc::new(AtomicU64::new(0));
    let writer = {
        let (stop, committed) = (Arc::clone(&stop), Arc::clone(&committed));
        std::thread::spawn(move || write_continuously(cluster_id, addresses, stop, committed))
    };
    // The backup starts while the client is committing, and the client is seen committing after
    // the backup's replica is back.
    let commits_past = |count: u64| committed.load(Ordering::Relaxed) >= count;
    cluster.wait_until("the writer to commit", Duration::from_secs(60), || {
        commits_past(20)
    });
    let (job_id, backup_id) = start_backup(&cluster, 1);
    // One job at a time per host.
    let second = cluster.post(1, "/v1/backups", Some(&admin), None);
    assert_eq!(second.status(), 409);
    let finished = cluster.wait_job(1, &job_id, BACKUP_TIMEOUT);
    let after_backup = committed.load(Ordering::Relaxed);
    cluster.wait_until(
        "the writer to commit after the backup",
        Duration::from_secs(60),
        || commits_past(after_backup + 20),
    );
    stop.store(true, Ordering::Relaxed);
    let (requests, failures, longest_gap) = writer.join().unwrap();
    println!("backup job: {finished}");
    println!("writer: {requests} requests, longest gap between commits {longest_gap:?}");
    assert_eq!(finished["state"], "succeeded", "{finished}");
    assert!(
        failures.is_empty(),
        "client requests failed during the backup: {failures:?}"
    );
    assert!(requests > 10, "the writer barely ran: {requests}");
    assert!(
        longest_gap < Duration::from_secs(5),
        "the cluster stopped committing for {longest_gap:?}"
    );
    let downtime_ms = finished["downtime_ms"].as_u64().unwrap();
    let job_ms = finished["finished_unix_ms"].as_u64().unwrap()
        - finished["started_unix_ms"].as_u64().unwrap();
    // The replica was stopped and started within the job.
    assert!(
        downtime_ms > 0 && downtime_ms <= job_ms,
        "downtime {downtime_ms} ms in a job of {job_ms} ms"
    );
    assert_eq!(cluster.ready_code(1), 200);

    // The backup is listed, complete, verified, and its manifest describes it.
    let listed = backups(&cluster, 1);
    assert_eq!(listed.len(), 1, "{listed:?}");
    let record = &listed[0];
    assert_eq!(record["id"], backup_id.as_str());
    assert_eq!(record["verification"]["ok"], true, "{record}");
    let manifest = &record["manifest"];
    assert_eq!(manifest["cluster_id"], cluster.state.cluster_id.as_str());
    assert_eq!(
        (
            manifest["replica_index"].as_u64(),
            manifest["replica_count"].as_u64()
        ),
        (Some(1), Some(3))
    );
    assert_eq!(manifest["compression"], "zstd");
    // The file keeps growing under the writer, so the copy is at most its current size.
    let data_size = std::fs::metadata(&cluster.state.replicas[1].data_file)
        .unwrap()
        .len();
    let copied = manifest["data_size_bytes"].as_u64().unwrap();
    assert!(
        copied > 1 << 30 && copied <= data_size,
        "{copied} vs {data_size}"
    );
    assert!(
        manifest["tigerbeetle_version"]
            .as_str()
            .unwrap()
            .starts_with("0.16.78"),
        "{manifest}"
    );
    let response = cluster.post(
        1,
        &format!("/v1/backups/{backup_id}/verify"),
        Some(&admin),
        None,
    );
    assert_eq!(response.status(), 200, "{:?}", response.text());

    // Ids that could escape the backup directory are refused.
    for bad in [
        "..%2F..%2Fetc",
        "%2Fetc%2Fpasswd",
        "20261123T101500Z-r0-1a2b3c4d%2F..",
        "x",
    ] {
        let response = cluster.get(1, &format!("/v1/backups/{bad}"), Some(&admin));
        assert_eq!(response.status(), 400, "{bad}: {:?}", response.text());
        let response = cluster.post(1, &format!("/v1/backups/{bad}/restore"), Some(&admin), None);
        assert!(matches!(response.status().as_u16(), 400 | 404), "{bad}");
    }

    // Restore while the cluster is live: refused, nothing changes.
    let data_file = &cluster.state.replicas[1].data_file;
    let inode = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(data_file).unwrap());
    assert_refused(
        &cluster,
        1,
        &format!("/v1/backups/{backup_id}/restore"),
        None,
        "running",
    );
    // A read token cannot restore (it needs control and backup).
    let response = cluster.post(
        1,
        &format!("/v1/backups/{backup_id}/restore"),
        Some(&cluster.peer_token),
        None,
    );
    assert_eq!(response.status(), 403);

    // With replica 1 stopped but its peers running: refused without the disaster-recovery
    // confirmation, and refused with the wrong cluster id.
    let response = cluster.post(1, "/v1/replica/stop", Some(&admin), None);
    assert_eq!(response.status(), 200);
    assert_refused(
        &cluster,
        1,
        &format!("/v1/backups/{backup_id}/restore"),
        None,
        "peer replicas may be running",
    );
    let wrong = serde_json::json!({"mode": "disaster-recovery", "cluster_id": "12345"}).to_string();
    assert_refused(
        &cluster,
        1,
        &format!("/v1/backups/{backup_id}/restore"),
        Some(&wrong),
        "confirmation names cluster 12345",
    );

    // One corrupted byte: verify fails, and restore refuses even with the right confirmation.
    let stored = cluster
        .state
        .state_dir
        .join("backups/replica-1")
        .join(&backup_id)
        .join(manifest["file"].as_str().unwrap());
    let mut bytes = std::fs::read(&stored).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&stored, &bytes).unwrap();
    let response = cluster.post(
        1,
        &format!("/v1/backups/{backup_id}/verify"),
        Some(&admin),
        None,
    );
    assert_eq!(response.status(), 409);
    let body: Value = response.json().unwrap();
    assert_eq!(body["error"], "corrupt", "{body}");
    let confirmed =
        serde_json::json!({"mode": "disaster-recovery", "cluster_id": cluster.state.cluster_id})
            .to_string();
    assert_refused(
        &cluster,
        1,
        &format!("/v1/backups/{backup_id}/restore"),
        Some(&confirmed),
        "failed verification",
    );
    assert_eq!(
        std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(data_file).unwrap()),
        inode,
        "the data file was touched"
    );
    let listed = backups(&cluster, 1);
    assert_eq!(listed[0]["verification"]["ok"], false, "{:?}", listed[0]);

    // Delete the corrupt backup; start the replica again.
    let response = cluster
        .http
        .delete(cluster.url(1, &format!("/v1/backups/{backup_id}")))
        .bearer_auth(&admin)
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(backups(&cluster, 1).is_empty());
    let response = cluster.post(1, "/v1/replica/start", Some(&admin), None);
    assert_eq!(response.status(), 200);
    cluster.wait_all_ready();

    // The audit log has a line per backup action.
    let audit = std::fs::read_to_string(cluster.state.state_dir.join("audit-1.log")).unwrap();
    for action in [
        "\"action\":\"backup\"",
        "\"action\":\"restore\"",
        "\"action\":\"backup_verify\"",
        "\"action\":\"backup_delete\"",
    ] {
        assert!(
            audit.contains(action),
            "{action} missing from the audit log:\n{audit}"
        );
    }
}

/// A tmpfs of `size_bytes` with room for `inodes` inodes (its root included) mounted at `path`
/// (root is needed, as for the rest of these tests); unmounted on drop.
struct SmallFilesystem {
    path: std::path::PathBuf,
}

impl SmallFilesystem {
    fn mount(path: &std::path::Path, size_bytes: u64, inodes: u64) -> SmallFilesystem {
        std::fs::create_dir_all(path).unwrap();
        let status = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size_bytes},nr_inodes={inodes}"),
                "tmpfs",
                path.to_str().unwrap(),
            ])
            .status()
            .unwrap();
        assert!(status.success(), "mount tmpfs at {}", path.display());
        SmallFilesystem {
            path: path.to_path_buf(),
        }
    }
}

impl Drop for SmallFilesystem {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(&self.path)
            .status();
    }
}

/// Whether process `pid` has exited (gone, or a zombie: it runs and writes nothing more).
fn exited(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
        stat.rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

/// Puts a FIFO where the data file was (the real one is moved aside, on the same filesystem, and
/// put back on drop). The running replica keeps its open descriptor; the next `open` of the path,
/// the backup's copy, blocks until a writer opens the FIFO, which this test never does: the copy
/// is held for as long as the test needs (the agent abandons it only after
/// backup.copy_timeout_ms, 30 minutes).
struct HeldDataFile {
    path: std::path::PathBuf,
    aside: std::path::PathBuf,
}

impl HeldDataFile {
    fn hold(path: &std::path::Path) -> HeldDataFile {
        let aside = path.with_extension("held-by-test");
        std::fs::rename(path, &aside).unwrap();
        nix::unistd::mkfifo(
            path,
            nix::sys::stat::Mode::S_IRUSR | nix::sys::stat::Mode::S_IWUSR,
        )
        .unwrap();
        HeldDataFile {
            path: path.to_path_buf(),
            aside,
        }
    }
}

impl Drop for HeldDataFile {
    fn drop(&mut self) {
        // Replaces the FIFO: whoever opens the path next gets the real data file.
        if let Err(error) = std::fs::rename(&self.aside, &self.path) {
            eprintln!("putting {} back: {error}", self.path.display());
        }
    }
}

#[test]
fn killed_agent_and_full_disk_leave_no_backup_and_the_replica_running() {
    let cluster = Cluster::up("backup-crash", Ports::for_test(4));
    cluster.wait_all_ready();
    let backup_dir = cluster.state.state_dir.join("backups/replica-2");
    let data_file = cluster.state.replicas[2].data_file.clone();

    // SIGKILL the agent in the middle of the copy: the replica stopped for it, the marker and
    // the half-made backup directory written. A copy of a fresh data file takes milliseconds, too
    // short a state to catch between two polls; so the copy is held: it opens a FIFO in place of
    // the data file and waits there until the test lets it go (it never does). Every part of the
    // state waited for below persists until the agent is killed.
    let held = HeldDataFile::hold(&data_file);
    let (job_id, backup_id) = start_backup(&cluster, 2);
    let marker = backup_dir.join(".replica-stopped-for-backup");
    let partial = backup_dir.join(format!(".partial-{backup_id}"));
    cluster.wait_until(
        "the backup's copy to be held with the replica stopped",
        Duration::from_secs(60),
        || {
            cluster.job(2, &job_id)["step"] == "copying the data file"
                && marker.exists()
                && partial.is_dir()
        },
    );
    assert_eq!(cluster.replica_pid(2), None, "the copy runs while stopped");
    // Another operation on that replica meanwhile is refused as busy with tbctl's own exit code
    // (5), on which the playbooks retry without reading the text.
    let (inventory, token_file) = (cluster.inventory_arg(), cluster.token_file_arg());
    let busy = tbctl(&[
        "--token-file",
        &token_file,
        "restart",
        "--inventory",
        &inventory,
        "--replica",
        "2",
    ]);
    let busy_text = String::from_utf8_lossy(&busy.stderr);
    assert_eq!(busy.status.code(), Some(5), "{busy_text}");
    assert!(busy_text.contains("refused (busy)"), "{busy_text}");
    let agent_pid = cluster.state.agents[2].pid;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent_pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    cluster.wait_until("the killed agent to exit", Duration::from_secs(10), || {
        exited(agent_pid)
    });
    assert!(
        !backup_dir.join(&backup_id).exists(),
        "a killed backup looks complete"
    );
    assert!(partial.is_dir(), "the half-made backup is there to clean");
    drop(held);
    // The agent comes back (as its supervisor would restart it): leftovers are cleaned, the
    // replica runs again, and nothing half-written is listed.
    let output = common::local_up(&cluster.state.state_dir, &Ports::for_test(4));
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    cluster.wait_all_ready();
    assert!(backups(&cluster, 2).is_empty());
    let leftovers: Vec<_> = std::fs::read_dir(&backup_dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert!(
        leftovers.is_empty(),
        "leftovers after restart: {leftovers:?}"
    );

    // A destination too small for the data file: refused before the replica is touched.
    let data_size = std::fs::metadata(&data_file).unwrap().len();
    let small = SmallFilesystem::mount(&backup_dir, 64 * 1024 * 1024, 1024);
    let pid_before = cluster.replica_pid(2);
    assert_refused(&cluster, 2, "/v1/backups", None, "bytes free");
    assert_eq!(
        cluster.replica_pid(2),
        pid_before,
        "a refused backup must not stop the replica"
    );
    drop(small);

    // A destination that is full when the copy writes to it: the job fails cleanly, the replica
    // is back, nothing half-made remains or is listed. The free-space check counts bytes, and
    // there are enough; but the filesystem has inodes for its root, the backup's directory and
    // the marker only, so the copy's file (created after the replica stopped) gets ENOSPC every
    // time: no filler racing the copy, no window to catch.
    let margin = 256 * 1024 * 1024; // the local cluster's backup.free_margin_bytes
    let small = SmallFilesystem::mount(&backup_dir, data_size + margin + 64 * 1024 * 1024, 3);
    let pid_before = cluster.replica_pid(2).expect("replica 2 runs");
    let (job_id, _) = start_backup(&cluster, 2);
    let finished = cluster.wait_job(2, &job_id, BACKUP_TIMEOUT);
    assert_eq!(finished["state"], "failed", "{finished}");
    let error = finished["error"].as_str().unwrap();
    assert!(
        error.contains("copying the data file") && error.contains("No space left"),
        "{finished}"
    );
    cluster.wait_until(
        "replica 2 ready after the failed backup",
        Duration::from_secs(120),
        || cluster.ready_code(2) == 200,
    );
    assert_ne!(
        cluster.replica_pid(2),
        Some(pid_before),
        "the copy failed after the stop: the replica was started again"
    );
    assert!(backups(&cluster, 2).is_empty());
    let leftovers: Vec<_> = std::fs::read_dir(&backup_dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert!(leftovers.is_empty(), "half-made leftovers: {leftovers:?}");
    drop(small);
}

#[test]
fn recover_rebuilds_a_lost_data_file_without_format() {
    // A wrapper records every invocation of the tigerbeetle binary, so the test can prove that
    // `format` is never run for the lost replica.
    let dir = std::env::temp_dir().join(format!("tb-tests-wrapper-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let calls = dir.join("calls.log");
    let wrapper = dir.join("tigerbeetle");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\necho \"$1 $*\" >> {}\nexec {} \"$@\"\n",
            calls.display(),
            common::tigerbeetle_bin().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let cluster = Cluster::up_with("recover", Ports::for_test(5), &wrapper);
    cluster.wait_all_ready();
    let admin = cluster.admin_token.clone();
    let formats_at_bootstrap = std::fs::read_to_string(&calls)
        .unwrap()
        .lines()
        .filter(|line| line.starts_with("format "))
        .count();
    assert_eq!(formats_at_bootstrap, 3);

    // Recover is refused while the data file exists.
    let response = cluster.post(2, "/v1/replica/recover", Some(&admin), None);
    assert_eq!(response.status(), 409);

    // Lose replica 2's data file.
    let response = cluster.post(2, "/v1/replica/stop", Some(&admin), None);
    assert_eq!(response.status(), 200);
    let data_file = cluster.state.replicas[2].data_file.clone();
    std::fs::remove_file(&data_file).unwrap();
    // The agent refuses to start it (it never formats).
    let response = cluster.post(2, "/v1/replica/start", Some(&admin), None);
    assert_eq!(response.status(), 409);
    assert!(!data_file.exists());

    let response = cluster.post(2, "/v1/replica/recover", Some(&admin), None);
    assert_eq!(response.status(), 202, "{:?}", response.text());
    let accepted: Value = response.json().unwrap();
    let job_id = accepted["job_id"].as_str().unwrap();
    let finished = cluster.wait_job(2, job_id, Duration::from_secs(600));
    println!("recover job: {finished}");
    assert_eq!(finished["state"], "succeeded", "{finished}");
    assert!(data_file.exists());
    assert_eq!(cluster.ready_code(2), 200);
    // The job may end on the replica's own log, before its first StatsD report: that report,
    // when it comes, must agree (not syncing).
    let mut status = Value::Null;
    cluster.wait_until(
        "the recovered replica's first StatsD report",
        Duration::from_secs(30),
        || {
            status = cluster.get(2, "/v1/status", Some(&admin)).json().unwrap();
            !status["replica"]["replica_sync_stage"].is_null()
        },
    );
    assert_eq!(status["replica"]["replica_sync_stage"], 0, "{status}");

    let calls_text = std::fs::read_to_string(&calls).unwrap();
    let formats = calls_text
        .lines()
        .filter(|line| line.starts_with("format "))
        .count();
    assert_eq!(
        formats, formats_at_bootstrap,
        "format was run after bootstrap:\n{calls_text}"
    );
    assert!(
        calls_text
            .lines()
            .any(|line| line.starts_with("recover ") && line.contains("--replica=2")),
        "{calls_text}"
    );
    drop(cluster);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn tbctl_backup_and_backups() {
    let cluster = Cluster::up("tbctl-backup", Ports::for_test(6));
    cluster.wait_all_ready();
    let inventory = cluster.inventory_arg();
    let token_file = cluster.token_file_arg();
    let run = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--inventory", &inventory, "--token-file", &token_file]);
        let output = tbctl(&all);
        let text = String::from_utf8_lossy(&output.stdout).to_string()
            + &String::from_utf8_lossy(&output.stderr);
        (output.status.success(), text, output.stdout)
    };
    let (ok, text, _) = run(&["backup"]);
    assert!(ok, "{text}");
    let (ok, text, json) = run(&["backups", "--json"]);
    assert!(ok, "{text}");
    let listed: Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");

    // With a replica down, tbctl refuses to pick one: the cluster is degraded.
    let response = cluster.post(0, "/v1/replica/stop", Some(&cluster.admin_token), None);
    assert_eq!(response.status(), 200);
    let (ok, text, _) = run(&["backup"]);
    assert!(!ok && text.contains("degraded"), "{text}");
    let response = cluster.post(0, "/v1/replica/start", Some(&cluster.admin_token), None);
    assert_eq!(response.status(), 200);
    // `tbctl restore-drill` runs in docs/backups.md's walk-through (tests/docs/walkthrough, in
    // scripts/test), as operators type it: a second drill here would cost another minute of CI.
}

/// Creates accounts `ids` on the cluster, or looks them up; returns the ids found.
fn accounts(cluster: &Cluster, create: &[u128], look_up: &[u128]) -> Vec<u128> {
    let cluster_id: u128 = cluster.state.cluster_id.parse().unwrap();
    let addresses = cluster
        .state
        .replicas
        .iter()
        .map(|replica| replica.address.clone())
        .collect::<Vec<_>>()
        .join(",");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = tigerbeetle_unofficial::Client::new(cluster_id, &addresses).unwrap();
        if !create.is_empty() {
            let new: Vec<_> = create
                .iter()
                .map(|&id| tigerbeetle_unofficial::Account::new(id, 1, 1))
                .collect();
            tokio::time::timeout(Duration::from_secs(60), client.create_accounts(new))
                .await
                .expect("create_accounts answered")
                .expect("accounts created");
        }
        if look_up.is_empty() {
            return Vec::new();
        }
        tokio::time::timeout(
            Duration::from_secs(60),
            client.lookup_accounts(look_up.to_vec()),
        )
        .await
        .expect("lookup answered")
        .expect("lookup")
        .iter()
        .map(|account| account.id())
        .collect()
    })
}

/// Waits until every replica is ready; if one is not within 3 minutes, fails with what its agent
/// says and the end of its replica's log.
fn wait_ready_or_explain(cluster: &Cluster, when: &str) {
    // One replica after the other, as each is seen ready once.
    let mut waiting_for = 0u8;
    let all_ready = common::poll(Duration::from_secs(180), Duration::from_millis(200), || {
        while waiting_for < 3 && cluster.ready_code(waiting_for) == 200 {
            waiting_for += 1;
        }
        if waiting_for == 3 {
            Ok(())
        } else {
            Err(waiting_for)
        }
    });
    let Err(timed_out) = all_ready else {
        return;
    };
    let mut logs = String::new();
    for index in 0..3 {
        let log =
            std::fs::read_to_string(cluster.state.state_dir.join(format!("replica-{index}.log")))
                .unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(15).collect();
        logs.push_str(&format!(
            "--- replica {index}: {}\n{}\n",
            cluster.ready_json(index),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        ));
    }
    panic!(
        "{when}: replica {} not ready after {:?}\n{logs}",
        timed_out.last, timed_out.waited
    );
}

/// The documented disaster recovery, through the API: a backup of every replica, then every
/// replica stopped and restored from its own backup (the first without confirmation, since its
/// peers are known to be stopped; the others with the disaster-recovery confirmation), then
/// started. The cluster comes back as of the backups: what was committed before them is there,
/// what came after is gone.
#[test]
fn disaster_recovery_restore_of_the_whole_cluster() {
    let cluster = Cluster::up("dr-restore", Ports::for_test(74));
    cluster.wait_all_ready();
    let admin = cluster.admin_token.clone();
    let (before, after) = ([7_001u128, 7_002], [7_101u128, 7_102]);
    accounts(&cluster, &before, &[]);

    let mut backup_ids = Vec::new();
    for replica in 0..3 {
        let (job_id, backup_id) = start_backup(&cluster, replica);
        let finished = cluster.wait_job(replica, &job_id, BACKUP_TIMEOUT);
        assert_eq!(finished["state"], "succeeded", "{finished}");
        wait_ready_or_explain(&cluster, &format!("after the backup of replica {replica}"));
        backup_ids.push(backup_id);
    }
    accounts(&cluster, &after, &[]);
    assert_eq!(accounts(&cluster, &[], &after).len(), 2);

    // The disaster: every replica stopped. The last two stops need force (the guard refuses to
    // take the cluster below its quorum) and the last one the cluster id typed out: without a
    // quorum the maintenance lease cannot be had.
    let forced = serde_json::json!({"force": true}).to_string();
    let lease_less =
        serde_json::json!({"force": true, "without_lease": cluster.state.cluster_id}).to_string();
    for replica in 0..3 {
        let body = if replica < 2 { &forced } else { &lease_less };
        let response = cluster.post(replica, "/v1/replica/stop", Some(&admin), Some(body));
        assert_eq!(response.status(), 200, "{:?}", response.text());
    }
    let audit = std::fs::read_to_string(cluster.state.state_dir.join("audit-2.log")).unwrap();
    assert!(audit.contains("WITHOUT the maintenance lease"), "{audit}");
    let confirmed =
        serde_json::json!({"mode": "disaster-recovery", "cluster_id": cluster.state.cluster_id})
            .to_string();
    for replica in 0..3u8 {
        let data_file = cluster.state.replicas[usize::from(replica)]
            .data_file
            .clone();
        let body = (replica > 0).then_some(confirmed.as_str());
        let response = cluster.post(
            replica,
            &format!("/v1/backups/{}/restore", backup_ids[usize::from(replica)]),
            Some(&admin),
            body,
        );
        assert_eq!(response.status(), 200, "{:?}", response.text());
        let restored: Value = response.json().unwrap();
        assert_eq!(restored["data_file"], data_file.display().to_string());
        let aside = restored["previous_moved_to"].as_str().unwrap();
        assert!(std::path::Path::new(aside).exists(), "{restored}");
        let record: Value = cluster
            .get(
                replica,
                &format!("/v1/backups/{}", backup_ids[usize::from(replica)]),
                Some(&admin),
            )
            .json()
            .unwrap();
        assert_eq!(
            blake3::hash(&std::fs::read(&data_file).unwrap())
                .to_hex()
                .as_str(),
            record["manifest"]["data_blake3"].as_str().unwrap(),
            "replica {replica}'s data file is not the backup's"
        );
    }
    for replica in 0..3 {
        let response = cluster.post(replica, "/v1/replica/start", Some(&admin), None);
        assert_eq!(response.status(), 200, "{:?}", response.text());
    }
    wait_ready_or_explain(&cluster, "after the restore");
    let mut found = accounts(&cluster, &[], &[before[0], before[1], after[0], after[1]]);
    found.sort_unstable();
    assert_eq!(found, before, "the cluster is not back as of the backups");

    // The audit log records the confirmed restores as forced.
    let audit = std::fs::read_to_string(cluster.state.state_dir.join("audit-2.log")).unwrap();
    assert!(
        audit
            .lines()
            .any(|line| line.contains("\"action\":\"restore\"")
                && line.contains("\"forced\":true")
                && line.contains("\"phase\":\"end\"")
                && line.contains("\"outcome\":\"succeeded\"")),
        "{audit}"
    );
}
