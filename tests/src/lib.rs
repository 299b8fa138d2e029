//! Integration tests live in `tests/tests/` (their shared harness in `tests/tests/common/`); this
//! library holds what every test binary shares and needs no cluster: the deadline-polling wait.

pub mod wait;
