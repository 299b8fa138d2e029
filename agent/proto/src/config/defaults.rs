//! The defaults serde fills in for absent fields (`#[serde(default = "defaults::...")]`).

pub fn compress() -> bool {
    true
}
pub fn zstd_level() -> i32 {
    3
}
pub fn keep_last() -> u32 {
    7
}
pub fn free_margin_bytes() -> u64 {
    1024 * 1024 * 1024
}
pub fn copy_timeout_ms() -> u64 {
    // A streamed copy runs at disk speed: 30 minutes is about 1 TB at 600 MB/s.
    30 * 60 * 1000
}
pub fn hook_timeout_ms() -> u64 {
    30 * 60 * 1000
}
pub fn connections_max() -> u32 {
    256
}
pub fn header_read_timeout_ms() -> u64 {
    5_000
}
pub fn request_timeout_ms() -> u64 {
    10_000
}
pub fn body_size_max_bytes() -> u64 {
    64 * 1024
}
pub fn auth_failures_per_minute_max() -> u32 {
    20
}
pub fn peer_timeout_ms() -> u64 {
    2_000
}
pub fn free_bytes_min() -> u64 {
    1024 * 1024 * 1024
}
pub fn free_percent_min() -> f64 {
    5.0
}
pub fn probe_interval_ms() -> u64 {
    1_000
}
pub fn probe_timeout_ms() -> u64 {
    2_000
}
/// TigerBeetle emits every 10 s, a period counted in 10 ms event-loop ticks
/// (`trace_emit_timeout`, fixed in its source). Each tick is 10 ms of waiting for I/O plus the
/// tick's own work, so on a loaded replica the real period runs somewhat over 10 s, and a
/// datagram may wait for the agent's runtime. 15 s is one period plus half a period for that
/// stretch: readiness does not flap between emits of a busy but healthy replica, and a
/// replica whose event loop hangs (without being stopped, which /proc/PID/stat shows at once)
/// is caught within 15 s instead of 25 s.
pub fn statsd_stale_ms() -> u64 {
    15_000
}
pub fn memlock_ratio_min() -> f64 {
    0.9
}
pub fn host_refresh_interval_ms() -> u64 {
    5_000
}
/// The recorder runs every 30 s: three runs missed.
pub fn firewall_record_stale_ms() -> u64 {
    90_000
}
pub fn stop_timeout_ms() -> u64 {
    10_000
}
pub fn recover_timeout_ms() -> u64 {
    3_600_000
}
pub fn ready_timeout_ms() -> u64 {
    120_000
}
pub fn lease_enabled() -> bool {
    true
}
/// ASCII "tbl" in the high bytes: far from the small ledger numbers applications use.
pub fn lease_ledger() -> u32 {
    0x7462_6c00
}
/// ASCII "tb-lease".
pub fn lease_id_prefix() -> String {
    "74622d6c65617365".into()
}
pub fn lease_request_timeout_ms() -> u64 {
    5_000
}
pub fn lease_margin_ms() -> u64 {
    5_000
}
