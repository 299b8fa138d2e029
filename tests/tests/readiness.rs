//! Readiness from the replica's own log (agent/daemon/src/replica_log/) against a real cluster
//! in process mode: a restarted replica is ready as soon as its log shows it rejoined (normal in
//! the cluster's view, state machine open, not syncing) and the cluster answers, not when its
//! first StatsD report arrives ~10 s after it started; every gate's commit lag, reconstructed from
//! the process's first StatsD report (agent/daemon/src/replica/gate.rs), is within one checkpoint
//! interval; a replica that cannot rejoin (the other two stopped) never becomes ready.

mod common;

use std::time::{Duration, Instant};

use common::{Cluster, Ports, metric_sample as sample};
use serde_json::Value;

const ROUNDS: usize = 2;
/// Restart → ready: under the StatsD interval (the first report comes ~10 s after the start),
/// with room for a machine running other tests beside this one (scripts/test's lanes: medians
/// of 3.7 and 5.1 s seen there, single restarts up to 9.7 s, 1-2 s alone). What proves the log
/// is each restart's evidence, checked below. Issue 16's 2 s target is bench/rollout's.
const RESTART_TO_READY_MEDIAN_MAX: Duration = Duration::from_secs(8);
/// TigerBeetle's StatsD interval: a restart ready sooner can only have been ready on its log.
const STATSD_INTERVAL: Duration = Duration::from_secs(10);
/// TigerBeetle's checkpoint interval (vsr_checkpoint_ops, production config).
const CHECKPOINT_OPS: f64 = 960.0;
/// A replica on the cluster's newest checkpoint is less than the interval plus the 32 ops to the
/// next checkpoint's trigger behind it (agent/daemon/src/replica/gate.rs).
const LAG_BOUND_OPS: f64 = 992.0;
/// The first StatsD report comes ~10 s after the process opened; margin for a loaded machine.
const FIRST_REPORT_WAIT: Duration = Duration::from_secs(40);
/// How long a replica that cannot rejoin is watched: past its first StatsD reports.
const NEVER_READY_WATCH: Duration = Duration::from_secs(25);

fn check(report: &Value, name: &str) -> Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|check| check["name"] == name)
        .unwrap()
        .clone()
}

/// The gate's commit lag once the process's first StatsD report bounds it, and its source.
fn gate_lag(cluster: &Cluster, replica: u8) -> (f64, String) {
    let mut found = None;
    cluster.wait_until(
        &format!("replica {replica}'s gate lag (its first StatsD report)"),
        FIRST_REPORT_WAIT,
        || {
            let body = cluster
                .get(replica, "/metrics", Some(&cluster.peer_token))
                .text()
                .unwrap();
            let lag = sample(&body, "tb_agent_replica_gate_commit_lag_ops");
            let source = ["log", "statsd"]
                .into_iter()
                .find(|source| {
                    body.contains(&format!(
                        "tb_agent_replica_gate_source{{source=\"{source}\"}} 1"
                    ))
                })
                .map(str::to_string);
            found = lag.zip(source);
            found.is_some()
        },
    );
    found.unwrap()
}

#[test]
fn a_restarted_replica_is_ready_from_its_log_well_before_its_first_statsd_report() {
    let cluster = Cluster::up("readiness", Ports::for_test(10));
    cluster.wait_all_ready();
    let admin = cluster.admin_token.clone();
    let mut times = Vec::new();
    for _ in 0..ROUNDS {
        for replica in 0..3u8 {
            let asked = Instant::now();
            // Restart answers once the replica is ready again (or fails).
            let response = cluster.post(replica, "/v1/replica/restart", Some(&admin), None);
            let took = asked.elapsed();
            assert_eq!(response.status(), 200, "{:?}", response.text());
            let report = cluster.ready_json(replica);
            assert_eq!(report["ready"], true, "{report}");
            let status = check(&report, "replica_status");
            let detail = status["detail"].as_str().unwrap().to_string();
            let (lag, source) = gate_lag(&cluster, replica);
            println!(
                "replica {replica}: restart → ready {} ms on {source}, commit lag at the gate \
                 <= {lag} ops ({detail})",
                took.as_millis()
            );
            // Within the StatsD interval the only evidence can be the log.
            if took < STATSD_INTERVAL {
                assert!(detail.contains("log: transition_to_normal"), "{detail}");
                assert_eq!(source, "log");
            }
            // A gate on the log passed on the checkpoint comparison: the replica's at least the
            // cluster's newest, as the other agents told it (the bound's series exists only
            // then); the lag itself is checked below, from the first StatsD report after it.
            if source == "log" {
                let body = cluster
                    .get(replica, "/metrics", Some(&cluster.peer_token))
                    .text()
                    .unwrap();
                let bound = sample(&body, "tb_agent_replica_gate_checkpoint_lag_bound_ops");
                assert!(
                    bound.is_some_and(|bound| bound <= LAG_BOUND_OPS),
                    "replica {replica}: a gate on the log without the checkpoints' bound: {bound:?}"
                );
            }
            assert!(
                lag <= CHECKPOINT_OPS,
                "replica {replica}: lag {lag} at its gate"
            );
            times.push(took);
            cluster.wait_all_ready();
        }
    }
    times.sort();
    let median = times[times.len() / 2];
    println!(
        "restart → ready: median {} ms over {} restarts ({:?})",
        median.as_millis(),
        times.len(),
        times.iter().map(Duration::as_millis).collect::<Vec<_>>()
    );
    assert!(
        median <= RESTART_TO_READY_MEDIAN_MAX,
        "median restart → ready {median:?} (bound {RESTART_TO_READY_MEDIAN_MAX:?})"
    );
    a_replica_that_cannot_rejoin_stays_not_ready(&cluster);
}

/// With the other two replicas stopped, a restarted replica cannot hear from a primary: it logs
/// normal in its own saved view at most, and the cluster answers no probe. It must stay not
/// ready, from its log and from StatsD alike.
fn a_replica_that_cannot_rejoin_stays_not_ready(cluster: &Cluster) {
    let admin = cluster.admin_token.as_str();
    let force = Some(r#"{"force": true}"#);
    for replica in [1, 2] {
        let response = cluster.post(replica, "/v1/replica/stop", Some(admin), force);
        assert_eq!(response.status(), 200, "{:?}", response.text());
    }
    // Killed, its agent starts it again after a second (process mode supervises it): no stop
    // through the agent, whose maintenance lease needs a cluster that answers.
    let killed = cluster.replica_pid(0).unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(killed as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    cluster.wait_until("replica 0 started again", Duration::from_secs(30), || {
        cluster.replica_pid(0).is_some_and(|pid| pid != killed)
    });
    let watch_until = Instant::now() + NEVER_READY_WATCH;
    let mut details = Vec::new();
    while Instant::now() < watch_until {
        let report = cluster.ready_json(0);
        assert_eq!(report["ready"], false, "{report}");
        let detail = check(&report, "replica_status")["detail"].to_string();
        if details.last() != Some(&detail) {
            details.push(detail);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    println!("replica 0 alone: {details:?}");
    for replica in [1, 2] {
        let response = cluster.post(replica, "/v1/replica/start", Some(admin), force);
        assert_eq!(response.status(), 200, "{:?}", response.text());
    }
    cluster.wait_all_ready();
}
