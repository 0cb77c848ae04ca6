//! openraft's storage test suite against Leasehold's sled log store and state
//! machine.
//!
//! `suite_test_all` runs the suite exactly as openraft intends
//! (`Suite::test_all`). The same cases are also run one `#[test]` each, so a
//! failure names the case that found it instead of stopping the whole suite
//! at the first one.

use leasehold::store::{LogStore, StateMachineStore};
use leasehold::types::{StorageError, TypeConfig};
use openraft::testing::{StoreBuilder, Suite};
use std::future::Future;
use tempfile::TempDir;

/// Opens a fresh store in a new temporary directory. The directory is the
/// guard: it is removed when the suite drops it, after the stores.
struct SledBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for SledBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachineStore), StorageError> {
        let dir = tempfile::Builder::new()
            .prefix("leasehold-suite-")
            .tempdir()
            .expect("create temp dir");
        let (log, sm) = leasehold::store::open(dir.path()).expect("open store");
        Ok((dir, log, sm))
    }
}

type S = Suite<TypeConfig, LogStore, StateMachineStore, SledBuilder, TempDir>;

#[test]
fn suite_test_all() {
    // test_all builds its own runtime for every case: call it from a plain
    // test, not inside another runtime.
    S::test_all(SledBuilder).expect("openraft storage suite");
}

/// Runs one case on a fresh store in a runtime of its own, as the suite does.
fn run<F, Fut>(case: F)
where
    F: FnOnce(LogStore, StateMachineStore) -> Fut,
    Fut: Future<Output = Result<(), StorageError>>,
{
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let (_dir, log, sm) = SledBuilder.build().await.expect("build");
        case(log, sm).await.expect("storage error");
    });
}

macro_rules! cases {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                run(S::$name);
            }
        )*
    };
}

cases!(
    last_membership_in_log_initial,
    last_membership_in_log,
    last_membership_in_log_multi_step,
    get_membership_initial,
    get_membership_from_log_and_empty_sm,
    get_membership_from_empty_log_and_sm,
    get_membership_from_log_le_sm_last_applied,
    get_membership_from_log_gt_sm_last_applied_1,
    get_membership_from_log_gt_sm_last_applied_2,
    get_initial_state_without_init,
    get_initial_state_membership_from_log_and_sm,
    get_initial_state_with_state,
    get_initial_state_last_log_gt_sm,
    get_initial_state_last_log_lt_sm,
    get_initial_state_log_ids,
    get_initial_state_re_apply_committed,
    save_vote,
    get_log_entries,
    limited_get_log_entries,
    try_get_log_entry,
    initial_logs,
    get_log_state,
    get_log_id,
    last_id_in_log,
    last_applied_state,
    purge_logs_upto_0,
    purge_logs_upto_5,
    purge_logs_upto_20,
    delete_logs_since_11,
    delete_logs_since_0,
    append_to_log,
    snapshot_meta,
    apply_single,
    apply_multiple,
);

#[test]
fn transfer_snapshot() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(S::transfer_snapshot(&SledBuilder))
        .expect("storage error");
}
