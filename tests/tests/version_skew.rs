//! Readiness across a TigerBeetle upgrade. The agents' embedded client is 0.16.78; a cluster
//! still on 0.16.70 evicts it (`ClientReleaseTooHigh`). That eviction comes from a serving
//! primary, so the agents count it as the cluster answering and report the skew: rollout and
//! upgrade gates keep working. Once the multiversion binary replaces the old one, the replicas
//! upgrade themselves and the skew clears.

mod common;

use std::time::Duration;

use common::{Cluster, Ports};

fn replica_status(cluster: &Cluster, replica: u8) -> serde_json::Value {
    let response = cluster.get(replica, "/v1/status", Some(&cluster.admin_token));
    assert_eq!(response.status(), 200);
    response.json::<serde_json::Value>().unwrap()["replica"].clone()
}

#[test]
fn readiness_holds_across_an_upgrade_from_an_older_cluster() {
    let past = common::tigerbeetle_past_bin();
    let multiversion = common::tigerbeetle_multiversion_bin();
    // Every replica runs the binary at one path, as a host does: the upgrade swaps that file.
    let binary_dir = std::env::temp_dir().join(format!("tb-tests-skew-bin-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&binary_dir);
    std::fs::create_dir_all(&binary_dir).unwrap();
    let binary = binary_dir.join("tigerbeetle");
    std::fs::copy(&past, &binary).unwrap();

    // `local up` waits for every agent to be ready: with a 0.16.70 cluster that needs the skew
    // to count as the cluster answering.
    let cluster = Cluster::up_with("skew", Ports::for_test(8), &binary);
    for replica in 0..3 {
        let status = replica_status(&cluster, replica);
        assert_eq!(status["version_skew"], true, "replica {replica}: {status}");
        assert_eq!(status["probe_ok"], true, "replica {replica}: {status}");
        let version = status["binary_version"].as_str().unwrap_or_default();
        assert!(
            version.starts_with("0.16.70"),
            "replica {replica}: {status}"
        );
        let ready = cluster.ready_json(replica);
        let probe = ready["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|check| check["name"] == "client_probe")
            .cloned()
            .unwrap();
        assert!(
            probe["detail"].as_str().unwrap().contains("version skew"),
            "{probe}"
        );
    }
    let inventory = cluster.inventory_arg();
    let token = cluster.token_file_arg();
    let status = common::tbctl(&["status", "--inventory", &inventory, "--token-file", &token]);
    let table = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success(), "{table}");
    assert!(table.contains("version skew"), "{table}");

    // The upstream upgrade: swap the binary atomically; the replicas re-exec into 0.16.78.
    let staged = binary_dir.join(".tigerbeetle.new");
    std::fs::copy(&multiversion, &staged).unwrap();
    std::fs::rename(&staged, &binary).unwrap();
    for replica in 0..3 {
        cluster.wait_until(
            &format!("replica {replica} upgraded, probing without skew, ready"),
            Duration::from_secs(240),
            || {
                let status = replica_status(&cluster, replica);
                status["version_skew"] == false
                    && status["probe_ok"] == true
                    && cluster.ready_code(replica) == 200
            },
        );
    }
    drop(cluster);
    let _ = std::fs::remove_dir_all(&binary_dir);
}
