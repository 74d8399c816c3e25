//! The file store's tests: restarts, damaged tails, the lock, segments, the tenant secret.

use super::*;
use crate::ledger::memory::FullItemBudget;
use crate::ledger::ITEM_KEYS;
use crate::repair::items::tests::turn;

const A: TenantKey = TenantKey([1; 16]);
const B: TenantKey = TenantKey([2; 16]);
const DAY: Duration = Duration::from_secs(86_400);

fn temp(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "rethread-file-{tag}-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let _ = fs::remove_dir_all(&dir);
    dir
}

fn memory() -> Arc<MemoryLedger> {
    let budget = FullItemBudget {
        total: 1 << 30,
        per_tenant: 1 << 30,
    };
    Arc::new(MemoryLedger::new(DAY, 1000, budget))
}

fn open(dir: &Path) -> FileLedger {
    FileLedger::open(dir, memory(), DAY, 1000, Duration::from_secs(1)).unwrap()
}

fn found(l: &FileLedger, tenant: TenantKey, id: &str) -> usize {
    l.lookup(tenant, &[id], ITEM_KEYS)
        .now_or_never()
        .unwrap()
        .unwrap()
        .len()
}

#[test]
fn turns_come_back_after_a_restart_for_their_tenant_only() {
    let dir = temp("restart");
    let l = open(&dir);
    let _ = l.record(A, turn("rs fc msg", false)).now_or_never();
    drop(l);
    let l = open(&dir);
    let found_turns = l
        .lookup(A, &["fc_1"], ITEM_KEYS)
        .now_or_never()
        .unwrap()
        .unwrap();
    assert_eq!(*found_turns[0], turn("rs fc msg", false));
    assert_eq!(found(&l, B, "fc_1"), 0, "another tenant finds nothing");
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_damaged_tail_is_cut_off_and_the_turns_before_it_stay() {
    let dir = temp("torn");
    let l = open(&dir);
    let _ = l.record(A, turn("rs fc", true)).now_or_never();
    drop(l);
    let path = segment_path(&dir, 1);
    let good = fs::metadata(&path).unwrap().len();
    let mut f = OpenOptions::new().append(true).open(&path).unwrap();
    f.write_all(&[7, 0, 0, 0, 1, 2, 3, 4, 9, 9]).unwrap();
    drop(f);
    let l = open(&dir);
    assert_eq!(found(&l, A, "fc_1"), 1);
    assert_eq!(fs::metadata(&path).unwrap().len(), good, "the tail is cut");
    let _ = l.record(A, turn("ig msg", true)).now_or_never();
    drop(l);
    let l = open(&dir);
    assert_eq!(
        found(&l, A, "ig_0"),
        1,
        "records after the cut are read again"
    );
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_flipped_byte_is_never_read_as_a_turn() {
    let dir = temp("flip");
    let l = open(&dir);
    let _ = l.record(A, turn("rs fc", true)).now_or_never();
    drop(l);
    let path = segment_path(&dir, 1);
    let mut bytes = fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    fs::write(&path, &bytes).unwrap();
    let l = open(&dir);
    assert_eq!(found(&l, A, "fc_1"), 0);
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_second_store_on_one_directory_is_refused_naming_the_first() {
    let dir = temp("lock");
    let _first = open(&dir);
    let second = FileLedger::open(&dir, memory(), DAY, 1000, Duration::from_secs(1));
    assert!(second.is_err(), "opened twice");
    let e = second.err().unwrap();
    assert!(
        e.to_string()
            .contains(&format!("in use by process {}", std::process::id())),
        "{e}"
    );
    drop(_first);
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn segments_beyond_capacity_are_deleted_whole() {
    let dir = temp("trim");
    let l = open(&dir);
    let mut log = lock(&l.log);
    for id in 0..3 {
        log.closed.push_back(Segment {
            id: 100 + id,
            turns: 600,
            newest: unix_secs(),
            bytes: 1,
            ..Segment::default()
        });
        File::create(segment_path(&dir, 100 + id)).unwrap();
    }
    log.trim(unix_secs());
    // 1,800 turns, a capacity of 1,000: the oldest 600 go; the next 600 still hold some of
    // the newest 1,000, so their segment stays.
    assert_eq!(log.closed.len(), 2);
    assert_eq!(log.closed[0].id, 101);
    assert!(!segment_path(&dir, 100).exists());
    drop(log);
    drop(l);
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_tenant_secret_is_made_once_and_kept_even_over_an_empty_one() {
    let dir = temp("secret");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("tenant-secret"), "").unwrap();
    let first = tenant_secret(&dir).unwrap();
    assert_eq!(first.len(), 64);
    assert_eq!(tenant_secret(&dir).unwrap(), first);
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_quiet_segment_is_closed_so_retention_reaches_its_turns() {
    let dir = temp("quiet");
    let l = open(&dir);
    let _ = l.record(A, turn("rs fc", true)).now_or_never();
    let mut log = lock(&l.log);
    let first = log.current.id;
    log.current.oldest = unix_secs() - (DAY.as_secs() / 8) as u32 - 1;
    log.trim(unix_secs());
    assert_eq!(
        log.current.id,
        first + 1,
        "a new segment takes the next turns"
    );
    assert_eq!(log.closed.back().map(|s| s.id), Some(first));
    // Past retention, the closed segment goes whole.
    if let Some(closed) = log.closed.back_mut() {
        closed.newest = unix_secs() - DAY.as_secs() as u32 - 1;
    }
    log.trim(unix_secs());
    assert!(log.closed.is_empty());
    assert!(!segment_path(&dir, first).exists());
    drop(log);
    drop(l);
    fs::remove_dir_all(&dir).unwrap();
}
