//! Scheduled backups (`[backup] schedule`) against a real 3-replica cluster: the agent takes a
//! backup of its replica by itself, as the job `POST /v1/backups` starts, and a tick that comes
//! while another holder has the cluster's maintenance lease (a rollout) is refused and audited,
//! stopping nothing, and the next tick tries again. `GET /v1/status` and `/metrics` show the
//! schedule's next tick and what became of the last one.

mod common;

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Cluster, LocalState, Ports, bin_dir, tbctl_as_admin as tbctl, wait_for};
use serde_json::Value;

/// A tick of "every minute" comes within 60 s; a refused run's lines are written at once.
const TICK_WAIT: Duration = Duration::from_secs(150);
/// A tick, then the backup: stop, copy, start, ready.
const BACKUP_WAIT: Duration = Duration::from_secs(300);
const REPLICA: u8 = 2;

fn backups(cluster: &Cluster) -> Vec<Value> {
    let listed: Value = cluster
        .get(REPLICA, "/v1/backups", Some(&cluster.admin_token))
        .json()
        .unwrap();
    listed.as_array().unwrap().clone()
}

/// The agent's `backup_schedule` status object.
fn schedule_status(cluster: &Cluster) -> Value {
    let status: Value = cluster
        .get(REPLICA, "/v1/status", Some(&cluster.admin_token))
        .json()
        .unwrap();
    status["backup_schedule"].clone()
}

/// The value of the gauge `name` (with its labels, if any) in the agent's /metrics, if exposed.
/// A gauge without labels is written `name{} value`.
fn gauge(cluster: &Cluster, name: &str) -> Option<f64> {
    let body = cluster
        .get(REPLICA, "/metrics", Some(&cluster.admin_token))
        .text()
        .unwrap();
    common::metric_sample(&body, name)
}

/// `text` (RFC 3339, UTC, to the second) as Unix seconds.
fn unix_s(text: &str) -> u64 {
    let parsed = tb_proto::clock::parse_rfc3339(text).unwrap_or_else(|| panic!("{text:?}"));
    parsed
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The audit lines of the agent's scheduled runs (actor "schedule").
fn scheduled_lines(audit_log: &Path) -> Vec<Value> {
    std::fs::read_to_string(audit_log)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["token"] == "schedule")
        .collect()
}

/// Replaces the agent of `REPLICA` by one whose configuration adds `[backup] schedule`, and
/// records its pid where the cluster's teardown finds it. Returns the audit log's path.
fn restart_agent_with_schedule(cluster: &Cluster, schedule: &str) -> std::path::PathBuf {
    let entry = &cluster.state.agents[usize::from(REPLICA)];
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(entry.pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    wait_for(
        "the agent to exit",
        Duration::from_secs(60),
        common::POLL_INTERVAL,
        || match nix::sys::signal::kill(nix::unistd::Pid::from_raw(entry.pid), None) {
            Err(_) => Ok(()),
            Ok(()) => Err(entry.pid),
        },
    );
    let mut config: toml::Table = toml::from_str(&std::fs::read_to_string(&entry.config).unwrap())
        .expect("the agent's configuration");
    let backup = config["backup"].as_table_mut().expect("[backup]");
    backup.insert("schedule".into(), toml::Value::String(schedule.into()));
    let path = entry
        .config
        .with_file_name(format!("agent-{REPLICA}-scheduled.toml"));
    std::fs::write(&path, toml::to_string(&config).unwrap()).unwrap();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&entry.log)
        .unwrap();
    // Not waited on: the cluster's teardown kills its group (local.json below), and the test
    // process, its parent, ends right after.
    #[allow(clippy::zombie_processes)]
    let child = Command::new(bin_dir().join("tb-agent"))
        .args(["serve", "--config", path.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .process_group(0)
        .spawn()
        .expect("start tb-agent");
    // The cluster's teardown stops the agents local.json names: this one now.
    let state_file = cluster.state.state_dir.join("local.json");
    let mut state: LocalState =
        serde_json::from_slice(&std::fs::read(&state_file).unwrap()).unwrap();
    state.agents[usize::from(REPLICA)].pid = child.id() as i32;
    std::fs::write(&state_file, serde_json::to_vec_pretty(&state).unwrap()).unwrap();
    let audit_log = config["server"]["audit_log"]
        .as_str()
        .expect("an audit log");
    audit_log.into()
}

#[test]
fn the_agent_takes_scheduled_backups_and_a_held_lease_refuses_them() {
    let cluster = Cluster::up("schedule", Ports::for_test(7));
    cluster.wait_all_ready();

    // Another holder has the lease, as a rollout does for its whole run.
    let acquired = tbctl(
        &cluster,
        &["lease", "acquire", "--ttl", "900", "--holder", "rollout"],
    );
    assert!(acquired.status.success(), "{acquired:?}");
    let lease_id = String::from_utf8(acquired.stdout)
        .unwrap()
        .trim()
        .to_string();

    let audit_log = restart_agent_with_schedule(&cluster, "* * * * *");
    let entry = &cluster.state.agents[usize::from(REPLICA)];
    common::wait_live(&cluster.http, &entry.url, Some(&entry.log));
    cluster.wait_until("replica 2 ready", Duration::from_secs(120), || {
        cluster.ready_code(REPLICA) == 200
    });
    let pid = cluster.replica_pid(REPLICA).expect("replica 2 runs");

    // The status names the schedule and its next tick: a whole minute, at most a minute ahead.
    let planned = wait_for(
        "the status to show the next tick",
        TICK_WAIT,
        common::POLL_INTERVAL,
        || {
            let schedule = schedule_status(&cluster);
            if schedule["next_tick"].is_string() {
                Ok(schedule)
            } else {
                Err(schedule)
            }
        },
    );
    assert_eq!(planned["expression"], "* * * * *", "{planned}");
    let next_tick_s = unix_s(planned["next_tick"].as_str().unwrap());
    assert!(next_tick_s.is_multiple_of(60), "{planned}");
    assert!(next_tick_s <= now_s() + 60, "{planned}");
    let next_run_s = unix_s(planned["next_run_at"].as_str().unwrap());
    assert!(next_run_s >= next_tick_s, "{planned}");
    // Absent for an instant while a tick's run is launched: waited for.
    let metric = wait_for(
        "the next tick's gauge",
        TICK_WAIT,
        common::POLL_INTERVAL,
        || {
            gauge(
                &cluster,
                "tb_agent_backup_schedule_next_tick_timestamp_seconds",
            )
            .ok_or(())
        },
    );
    assert!((metric as u64).is_multiple_of(60), "{metric}");

    // A tick under the held lease: refused and audited, nothing stopped, no backup.
    let refused = wait_for(
        "a scheduled run refused under the held lease",
        TICK_WAIT,
        common::POLL_INTERVAL,
        || {
            let lines = scheduled_lines(&audit_log);
            match lines.iter().find(|line| line["phase"] == "end") {
                Some(end) => Ok(end.clone()),
                None => Err(lines),
            }
        },
    );
    assert_eq!(refused["action"], "backup", "{refused}");
    // The lease's refusal (409 lease_held to a request) is counted and audited as busy.
    assert_eq!(refused["outcome"], "busy", "{refused}");
    let detail = refused["detail"].as_str().unwrap();
    assert!(
        detail.contains("maintenance lease is held") && detail.contains(&lease_id),
        "names the holder's lease: {refused}"
    );
    assert_eq!(
        cluster.replica_pid(REPLICA),
        Some(pid),
        "nothing was stopped"
    );
    assert!(backups(&cluster).is_empty());
    // Every tick is refused while the lease is held, and a retry would come past the next tick
    // of "every minute": each tick is given up, and the status says so with the reason.
    let given_up = wait_for(
        "the status to show the tick given up",
        TICK_WAIT,
        common::POLL_INTERVAL,
        || {
            let schedule = schedule_status(&cluster);
            if schedule["last"]["outcome"] == "gave_up" {
                Ok(schedule)
            } else {
                Err(schedule)
            }
        },
    );
    let last = &given_up["last"];
    assert!(
        last["error"].as_str().unwrap().contains(&lease_id),
        "{given_up}"
    );
    assert!(
        last["backup_id"].is_null() && last["retry_at"].is_null(),
        "{given_up}"
    );
    assert!(given_up["last_success_at"].is_null(), "{given_up}");
    assert_eq!(
        gauge(
            &cluster,
            "tb_agent_backup_schedule_last_outcome{outcome=\"gave_up\"}"
        ),
        Some(1.0)
    );

    // The lease released, a later tick takes the backup, with no request from anyone.
    let released = tbctl(&cluster, &["--lease-id", &lease_id, "lease", "release"]);
    assert!(released.status.success(), "{released:?}");
    let listed = wait_for(
        "a scheduled backup listed",
        BACKUP_WAIT,
        common::POLL_INTERVAL,
        || {
            let listed = backups(&cluster);
            if listed.is_empty() {
                Err(listed)
            } else {
                Ok(listed)
            }
        },
    );
    assert_eq!(listed.len(), 1, "one backup per tick: {listed:?}");
    let backup_id = listed[0]["id"].as_str().unwrap();
    let job = cluster.wait_job(REPLICA, &format!("backup-{backup_id}"), BACKUP_WAIT);
    assert_eq!(job["state"], "succeeded", "{job}");
    let succeeded = scheduled_lines(&audit_log)
        .into_iter()
        .any(|line| line["job_id"] == job["id"] && line["outcome"] == "succeeded");
    assert!(succeeded, "audited as the schedule's: {job}");

    // The status records the success. A later tick may have started its own run by the time
    // it is read: then that run is the last one, and the success stays in last_success_at.
    let recorded = wait_for(
        "the status to record the scheduled backup's success",
        BACKUP_WAIT,
        common::POLL_INTERVAL,
        || {
            let schedule = schedule_status(&cluster);
            if schedule["last_success_at"].is_string() {
                Ok(schedule)
            } else {
                Err(schedule)
            }
        },
    );
    let finished_s = job["finished_unix_ms"].as_u64().unwrap() / 1000;
    let success_s = unix_s(recorded["last_success_at"].as_str().unwrap());
    assert!(success_s >= finished_s, "{recorded} {job}");
    let last = &recorded["last"];
    if last["job_id"] == job["id"] {
        assert_eq!(last["outcome"], "succeeded", "{recorded}");
        assert_eq!(last["backup_id"], backup_id, "{recorded}");
        assert_eq!(success_s, finished_s, "{recorded} {job}");
    } else {
        // The backup's tick is the minute its job started in (launched within seconds).
        let started_s = job["started_unix_ms"].as_u64().unwrap() / 1000;
        let tick_s = unix_s(last["tick"].as_str().unwrap());
        assert!(tick_s > started_s / 60 * 60, "{recorded} {job}");
    }
    let metric = gauge(
        &cluster,
        "tb_agent_backup_schedule_last_success_timestamp_seconds",
    );
    assert!(metric.is_some_and(|s| s as u64 >= finished_s), "{metric:?}");
    cluster.wait_until("replica 2 ready again", Duration::from_secs(120), || {
        cluster.ready_code(REPLICA) == 200
    });
}
