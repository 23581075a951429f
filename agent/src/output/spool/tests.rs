use std::time::Duration;

use super::*;

fn batch(ns: &str, i: usize) -> EncodedBatch {
    EncodedBatch {
        ns: ns.into(),
        points: 2,
        payload: format!("m,n={i} value={i} 1764000000\nm,n={i} value=0 1764000001\n").into_bytes(),
    }
}

fn big(i: usize, size: usize) -> EncodedBatch {
    let mut payload = format!("m value={i} 1764000000\n").into_bytes();
    payload.resize(size, b'#');
    EncodedBatch {
        ns: "big".into(),
        points: 1,
        payload,
    }
}

fn opts(segment_bytes: u64) -> SpoolOptions {
    SpoolOptions {
        segment_bytes,
        cache_bytes: 1 << 20,
        retry_every: Duration::ZERO,
    }
}

async fn take(spool: &Spool) -> SpoolRecord {
    tokio::time::timeout(Duration::from_secs(5), spool.next())
        .await
        .expect("a record is waiting")
}

/// Takes and acks everything, returning the payloads in order.
async fn drain(spool: &Spool) -> Vec<EncodedBatch> {
    let mut out = Vec::new();
    while !spool.is_empty() {
        let r = take(spool).await;
        out.push((*r.batch).clone());
        spool.ack(r.id);
    }
    out
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    segment::list_segments(dir)
        .expect("list")
        .into_iter()
        .map(|(_, p)| p)
        .collect()
}

fn disk_usage(dir: &Path) -> u64 {
    segment_files(dir)
        .iter()
        .map(|p| fs::metadata(p).map_or(0, |m| m.len()))
        .sum()
}

#[tokio::test]
async fn batches_come_out_in_order_across_segments_and_delivered_segments_are_removed() {
    let dir = tempfile::tempdir().expect("tmp");
    let spool = Spool::open_with(dir.path(), 1 << 20, opts(1024)).expect("open");
    assert!(spool.stats().durable);
    let sent: Vec<EncodedBatch> = (0..60).map(|i| batch("a", i)).collect();
    for b in &sent {
        spool.push(b.clone());
    }
    assert_eq!(spool.stats().batches, 60);
    assert!(segment_files(dir.path()).len() > 3, "several segments");
    assert_eq!(drain(&spool).await, sent);
    let st = spool.stats();
    assert_eq!((st.batches, st.bytes, st.dropped_batches), (0, 0, 0));
    assert!(
        segment_files(dir.path()).len() <= 1,
        "only the open segment stays: {:?}",
        segment_files(dir.path())
    );
}

#[tokio::test]
async fn next_is_cancel_safe_and_repeats_until_acked() {
    let dir = tempfile::tempdir().expect("tmp");
    let spool = Spool::open(dir.path(), 1 << 20).expect("open");
    let waited = tokio::time::timeout(Duration::from_millis(50), spool.next()).await;
    assert!(waited.is_err(), "nothing to hand out yet");
    spool.push(batch("a", 1));
    spool.push(batch("a", 2));
    let first = take(&spool).await;
    let again = take(&spool).await;
    assert_eq!(first.id, again.id, "not acked: handed out again");
    spool.ack(first.id + 1); // not the oldest: ignored
    assert_eq!(spool.stats().batches, 2);
    spool.ack(first.id);
    assert_eq!(*take(&spool).await.batch, batch("a", 2));
}

#[tokio::test]
async fn a_reopened_spool_delivers_what_was_not_acked_in_order() {
    let dir = tempfile::tempdir().expect("tmp");
    let sent: Vec<EncodedBatch> = (0..20).map(|i| batch("a", i)).collect();
    {
        let spool = Spool::open_with(dir.path(), 1 << 20, opts(2048)).expect("open");
        for b in &sent {
            spool.push(b.clone());
        }
        for _ in 0..7 {
            let r = take(&spool).await;
            spool.ack(r.id);
        }
        spool.sync();
    }
    let spool = Spool::open_with(dir.path(), 1 << 20, opts(2048)).expect("reopen");
    assert_eq!(spool.stats().batches, 13);
    assert_eq!(drain(&spool).await, sent[7..]);
    spool.push(batch("b", 99));
    spool.sync();
    drop(spool);
    let spool = Spool::open_with(dir.path(), 1 << 20, opts(2048)).expect("reopen");
    assert_eq!(
        drain(&spool).await,
        [batch("b", 99)],
        "acks survive a reopen; new ids follow the old ones"
    );
}

#[tokio::test]
async fn without_a_sync_a_reopen_redelivers_but_loses_nothing() {
    // What a SIGKILL leaves: records written (page cache), ack position of the last sync.
    let dir = tempfile::tempdir().expect("tmp");
    let sent: Vec<EncodedBatch> = (0..10).map(|i| batch("a", i)).collect();
    {
        let spool = Spool::open(dir.path(), 1 << 20).expect("open");
        for b in &sent[..5] {
            spool.push(b.clone());
        }
        for _ in 0..2 {
            let r = take(&spool).await;
            spool.ack(r.id);
        }
        spool.sync();
        let r = take(&spool).await;
        spool.ack(r.id); // delivered, but the ack is not stored yet
        for b in &sent[5..] {
            spool.push(b.clone());
        }
    }
    let spool = Spool::open(dir.path(), 1 << 20).expect("reopen");
    assert_eq!(drain(&spool).await, sent[2..], "at least once, in order");
}

#[tokio::test]
async fn a_torn_tail_is_skipped_and_counted_and_everything_before_it_delivered() {
    let dir = tempfile::tempdir().expect("tmp");
    let sent: Vec<EncodedBatch> = (0..3).map(|i| batch("a", i)).collect();
    {
        let spool = Spool::open(dir.path(), 1 << 20).expect("open");
        for b in &sent {
            spool.push(b.clone());
        }
    }
    let files = segment_files(dir.path());
    assert_eq!(files.len(), 1);
    let len = fs::metadata(&files[0]).expect("meta").len();
    let f = fs::OpenOptions::new()
        .write(true)
        .open(&files[0])
        .expect("open segment");
    f.set_len(len - 5).expect("cut the last record");
    let spool = Spool::open(dir.path(), 1 << 20).expect("reopen");
    assert_eq!(
        spool.stats().dropped_batches,
        1,
        "the torn record is counted"
    );
    assert_eq!(drain(&spool).await, sent[..2]);
    // New records go to a new segment, never after the torn bytes.
    spool.push(batch("a", 3));
    drop(spool);
    let spool = Spool::open(dir.path(), 1 << 20).expect("reopen");
    let again = drain(&spool).await;
    assert!(again.ends_with(&[batch("a", 3)]), "{again:?}");
}

#[tokio::test]
async fn a_corrupt_record_in_the_middle_is_skipped_and_the_others_delivered() {
    let dir = tempfile::tempdir().expect("tmp");
    let sent: Vec<EncodedBatch> = (0..3).map(|i| batch("a", i)).collect();
    {
        let spool = Spool::open(dir.path(), 1 << 20).expect("open");
        for b in &sent {
            spool.push(b.clone());
        }
    }
    let path = &segment_files(dir.path())[0];
    let mut raw = fs::read(path).expect("read");
    let second = (segment::HEADER_LEN + segment::record_len(&sent[0])) as usize;
    let last = second + segment::record_len(&sent[1]) as usize - 1;
    raw[last] ^= 0xff;
    fs::write(path, raw).expect("write");
    let spool = Spool::open(dir.path(), 1 << 20).expect("reopen");
    assert_eq!(spool.stats().dropped_batches, 1);
    assert_eq!(drain(&spool).await, [sent[0].clone(), sent[2].clone()]);
}

#[tokio::test]
async fn past_the_bound_the_oldest_segments_are_dropped_and_counted() {
    let dir = tempfile::tempdir().expect("tmp");
    let max = 64 * 1024;
    let spool = Spool::open_with(dir.path(), max, opts(8 * 1024)).expect("open");
    let sent: Vec<EncodedBatch> = (0..200).map(|i| big(i, 1000)).collect();
    for b in &sent {
        spool.push(b.clone());
        assert!(disk_usage(dir.path()) <= max, "the bound holds on disk");
    }
    let st = spool.stats();
    assert!(st.dropped_batches > 100, "{st:?}");
    assert_eq!(st.dropped_points, st.dropped_batches, "one point each");
    assert_eq!(st.batches + st.dropped_batches, 200);
    let full = super::DropReason::SpoolFull as usize;
    assert_eq!(
        st.dropped_by[full],
        super::Dropped {
            batches: st.dropped_batches,
            points: st.dropped_points
        },
        "all of them for the bound: {st:?}"
    );
    let left = drain(&spool).await;
    let first_left = 200 - left.len();
    assert_eq!(
        left,
        sent[first_left..],
        "the newest are kept, in order, without gaps"
    );
}

#[tokio::test]
async fn a_backlog_beyond_the_memory_cache_is_read_back_from_disk() {
    let dir = tempfile::tempdir().expect("tmp");
    let no_cache = SpoolOptions {
        cache_bytes: 0,
        ..opts(4096)
    };
    let spool = Spool::open_with(dir.path(), 1 << 20, no_cache).expect("open");
    let sent: Vec<EncodedBatch> = (0..100).map(|i| batch("a", i)).collect();
    for b in &sent {
        spool.push(b.clone());
    }
    assert_eq!(spool.lock().cached_bytes, 0);
    assert_eq!(drain(&spool).await, sent);
}

#[tokio::test]
async fn an_unusable_directory_falls_back_to_memory_and_recovers() {
    let dir = tempfile::tempdir().expect("tmp");
    let spool_dir = dir.path().join("spool");
    // A file where the directory should be: unusable even for root.
    fs::write(&spool_dir, "in the way").expect("file");
    let spool = Spool::open_with(&spool_dir, 1 << 20, opts(4096)).expect("open never fails");
    assert!(!spool.stats().durable);
    let problem = spool.problem().expect("a problem is reported");
    assert!(problem.contains("spool"), "{problem}");
    spool.push(batch("a", 1));
    assert!(!spool.stats().durable);
    assert_eq!(*take(&spool).await.batch, batch("a", 1));

    fs::remove_file(&spool_dir).expect("remove");
    spool.push(batch("a", 2));
    assert!(spool.stats().durable, "back on disk: {:?}", spool.problem());
    assert_eq!(spool.problem(), None);
    assert_eq!(
        drain(&spool).await,
        [batch("a", 1), batch("a", 2)],
        "memory and disk batches stay in order"
    );
    spool.push(batch("a", 3));
    drop(spool);
    let spool = Spool::open_with(&spool_dir, 1 << 20, opts(4096)).expect("reopen");
    assert!(spool.stats().durable);
    let left = drain(&spool).await;
    assert!(left.ends_with(&[batch("a", 3)]), "{left:?}");
}

#[tokio::test]
async fn a_full_disk_falls_back_to_memory_and_recovers() {
    let dir = tempfile::tempdir().expect("tmp");
    let spool = Spool::open_with(dir.path(), 1 << 20, opts(4096)).expect("open");
    // The next segment is a link to /dev/full: every write fails with ENOSPC.
    let next = segment::segment_path(dir.path(), 1);
    std::os::unix::fs::symlink("/dev/full", &next).expect("symlink");
    spool.push(batch("a", 1));
    assert!(!spool.stats().durable);
    let problem = spool.problem().unwrap_or_default();
    assert!(problem.contains("space"), "{problem}");
    // The failed segment's name is cleaned up by the spool itself; space "returns".
    let _ = fs::remove_file(&next);
    assert!(!next.exists());
    spool.push(batch("a", 2));
    assert!(spool.stats().durable, "{:?}", spool.problem());
    assert_eq!(drain(&spool).await, [batch("a", 1), batch("a", 2)]);
}

#[tokio::test]
async fn the_memory_fallback_is_bounded_and_counts_what_it_drops() {
    let spool = Spool::in_memory(4096);
    for i in 0..20 {
        spool.push(big(i, 1000));
    }
    let st = spool.stats();
    assert!(!st.durable);
    assert!(st.bytes <= 4096, "{st:?}");
    assert_eq!(st.batches + st.dropped_batches, 20);
    let left = drain(&spool).await;
    assert_eq!(left.last(), Some(&big(19, 1000)));
}

#[tokio::test]
async fn the_sync_task_stores_acks_and_stops_on_cancel() {
    let dir = tempfile::tempdir().expect("tmp");
    let spool = Spool::open(dir.path(), 1 << 20).expect("open");
    let stop = CancellationToken::new();
    let task = tokio::spawn(spool.clone().run_sync(stop.clone()));
    spool.push(batch("a", 1));
    spool.push(batch("a", 2));
    let r = take(&spool).await;
    spool.ack(r.id);
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("stops")
        .expect("join");
    assert_eq!(segment::read_acked(dir.path()), Ok(r.id));
}

#[tokio::test(start_paused = true)]
async fn the_sync_task_makes_no_round_while_nothing_was_written() {
    let dir = tempfile::tempdir().expect("tmp");
    let spool = Spool::open(dir.path(), 1 << 20).expect("open");
    let stop = CancellationToken::new();
    let task = tokio::spawn(spool.clone().run_sync(stop.clone()));
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(spool.sync_rounds(), 0, "nothing was pushed");

    // A burst delivered at once: one round (a second later) stores the ack, then none.
    for i in 1..=3 {
        spool.push(batch("a", i));
    }
    let mut last = 0;
    for _ in 1..=3 {
        let r = take(&spool).await;
        spool.ack(r.id);
        last = r.id;
    }
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(spool.sync_rounds(), 1, "one round for the burst");
    assert_eq!(segment::read_acked(dir.path()), Ok(last));

    // A record the output does not take keeps the rounds going (it is fsynced by the second),
    // until its ack is stored.
    spool.push(batch("a", 4));
    tokio::time::sleep(Duration::from_millis(5_500)).await;
    assert_eq!(
        spool.sync_rounds(),
        1 + 5,
        "a round a second while a record waits"
    );
    let r = take(&spool).await;
    spool.ack(r.id);
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(
        spool.sync_rounds(),
        1 + 6,
        "the round that stored the ack was the last"
    );
    assert_eq!(segment::read_acked(dir.path()), Ok(r.id));

    stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("stops")
        .expect("join");
}

/// Runs the delivery loop over what `spool` holds until it is empty, then stops.
async fn deliver_all(
    spool: &Spool,
    output: Box<dyn crate::output::Output>,
    stats: &Arc<crate::output::OutputStats>,
) {
    let drain = CancellationToken::new();
    drain.cancel(); // deliver what is there, then stop
    tokio::time::timeout(
        Duration::from_secs(10),
        crate::output::run_delivery(
            spool.clone(),
            output,
            Arc::clone(stats),
            drain,
            Duration::from_secs(5),
        ),
    )
    .await
    .expect("delivery finishes");
}

/// An output that fails the first `fail` attempts, refuses batches whose payload says
/// `refuse`, and records what it accepted.
struct FlakyOutput {
    fail: usize,
    got: Arc<Mutex<Vec<EncodedBatch>>>,
}

impl crate::output::Output for FlakyOutput {
    fn endpoint(&self) -> String {
        "flaky".into()
    }

    fn deliver<'a>(
        &'a mut self,
        batch: &'a Arc<EncodedBatch>,
    ) -> crate::output::BoxFuture<'a, Result<(), crate::output::DeliveryError>> {
        Box::pin(async move {
            if self.fail > 0 {
                self.fail -= 1;
                return Err(crate::output::DeliveryError::Retry("down".into()));
            }
            if batch.payload.starts_with(b"refuse") {
                return Err(crate::output::DeliveryError::Reject("bad data".into()));
            }
            self.got.lock().expect("lock").push((**batch).clone());
            Ok(())
        })
    }
}

#[tokio::test]
async fn the_delivery_loop_retries_counts_refusals_and_leaves_nothing_to_redeliver() {
    use std::sync::atomic::Ordering;
    let dir = tempfile::tempdir().expect("tmp");
    let spool = Spool::open(dir.path(), 1 << 20).expect("open");
    let refused = EncodedBatch {
        ns: "a".into(),
        points: 3,
        payload: b"refuse me".to_vec(),
    };
    spool.push(batch("a", 0));
    spool.push(refused);
    spool.push(batch("b", 1));
    let got = Arc::new(Mutex::new(Vec::new()));
    let stats = Arc::new(crate::output::OutputStats::default());
    let output = Box::new(FlakyOutput {
        fail: 3,
        got: Arc::clone(&got),
    });
    deliver_all(&spool, output, &stats).await;
    assert_eq!(
        *got.lock().expect("lock"),
        [batch("a", 0), batch("b", 1)],
        "retried until delivered, in order"
    );
    assert_eq!(stats.rejected_batches.load(Ordering::Relaxed), 1);
    assert_eq!(stats.rejected_points.load(Ordering::Relaxed), 3);
    assert_eq!(stats.delivered_points.load(Ordering::Relaxed), 4);
    spool.sync();
    drop(spool);
    let spool = Spool::open(dir.path(), 1 << 20).expect("reopen");
    assert!(
        spool.is_empty(),
        "nothing is delivered twice after a clean stop"
    );
}

#[tokio::test]
async fn segments_are_fsynced_only_for_records_that_waited_a_round() {
    let dir = tempfile::tempdir().expect("tmp");
    let spool = Spool::open(dir.path(), 1 << 20).expect("open");
    spool.push(batch("a", 1));
    let r = take(&spool).await;
    spool.ack(r.id);
    spool.sync_round(false);
    assert!(!spool.lock().dirty, "delivered records need no fsync");

    spool.push(batch("a", 2));
    spool.sync_round(false);
    assert!(
        spool.lock().dirty,
        "just pushed: the output may take it first"
    );
    spool.sync_round(false);
    assert!(!spool.lock().dirty, "waited a whole round: fsynced");

    spool.push(batch("a", 3));
    spool.sync();
    assert!(!spool.lock().dirty, "shutdown fsyncs everything waiting");
}

#[tokio::test]
async fn a_damaged_segment_gives_its_intact_records_then_goes_to_quarantine() {
    let dir = tempfile::tempdir().expect("tmp");
    let sent: Vec<EncodedBatch> = (0..20).map(|i| batch("a", i)).collect();
    {
        let spool = Spool::open(dir.path(), 1 << 20).expect("open");
        for b in &sent {
            spool.push(b.clone());
        }
    }
    let path = &segment_files(dir.path())[0];
    let mut raw = fs::read(path).expect("read");
    // An impossible length in the third record, and a damaged header.
    let third = (segment::HEADER_LEN + 2 * segment::record_len(&sent[0])) as usize;
    raw[third + 4..third + 8].copy_from_slice(&u32::MAX.to_le_bytes());
    raw[..8].copy_from_slice(b"garbage!");
    fs::write(path, raw).expect("write");

    let spool = Spool::open(dir.path(), 1 << 20).expect("reopen");
    let st = spool.stats();
    assert_eq!(
        (
            st.dropped_batches,
            st.dropped_points,
            st.damaged_ranges,
            st.lost_unknown_bytes
        ),
        (1, 2, 2, 0),
        "exactly the damaged record is lost: {st:?}"
    );
    let damaged = super::DropReason::Damaged as usize;
    assert_eq!(
        (
            st.dropped_by[damaged].batches,
            st.dropped_by[damaged].points
        ),
        (1, 2),
        "counted as damaged: {st:?}"
    );
    let mut expected = sent.clone();
    expected.remove(2);
    assert_eq!(drain(&spool).await, expected);
    assert!(
        segment_files(dir.path()).is_empty(),
        "delivered: moved away"
    );
    let quarantined = fs::read_dir(dir.path().join(QUARANTINE_DIR))
        .expect("quarantine")
        .count();
    assert_eq!(quarantined, 1);
    drop(spool);
    let spool = Spool::open(dir.path(), 1 << 20).expect("reopen");
    assert_eq!(
        spool.stats(),
        SpoolStats {
            durable: true,
            ..SpoolStats::default()
        },
        "not reported again"
    );
}

#[tokio::test]
async fn segments_an_older_agent_left_are_delivered_after_an_upgrade() {
    let dir = tempfile::tempdir().expect("tmp");
    let sent: Vec<EncodedBatch> = (0..3).map(|i| batch("old", i)).collect();
    let mut raw = segment::MAGIC_V1.to_vec();
    for (id, b) in (1u64..).zip(&sent) {
        let mut body = Vec::new();
        body.extend_from_slice(&id.to_le_bytes());
        body.extend_from_slice(&b.points.to_le_bytes());
        body.extend_from_slice(&(b.ns.len() as u16).to_le_bytes());
        body.extend_from_slice(b.ns.as_bytes());
        body.extend_from_slice(&b.payload);
        raw.extend_from_slice(&(body.len() as u32).to_le_bytes());
        raw.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        raw.extend_from_slice(&body);
    }
    fs::write(segment::segment_path(dir.path(), 1), raw).expect("write");
    let no_cache = SpoolOptions {
        cache_bytes: 0,
        ..opts(4096)
    };
    let spool = Spool::open_with(dir.path(), 1 << 20, no_cache).expect("open");
    assert_eq!(spool.stats().batches, 3);
    spool.push(batch("new", 9));
    let mut expected = sent.clone();
    expected.push(batch("new", 9));
    assert_eq!(
        drain(&spool).await,
        expected,
        "read back from disk in both formats"
    );
}

#[tokio::test]
async fn the_sync_task_finds_the_disk_usable_again_without_a_push() {
    let dir = tempfile::tempdir().expect("tmp");
    let spool = Spool::open_with(dir.path(), 1 << 20, opts(4096)).expect("open");
    let next = segment::segment_path(dir.path(), 1);
    std::os::unix::fs::symlink("/dev/full", &next).expect("symlink");
    spool.push(batch("a", 1));
    assert!(!spool.stats().durable);
    // The probe's segment (the next id) is on the full disk too; the spool removes the failed
    // file itself, which is when space "returns".
    let probe = segment::segment_path(dir.path(), 2);
    std::os::unix::fs::symlink("/dev/full", &probe).expect("symlink");
    spool.sync_round(false);
    assert!(!spool.stats().durable, "still full");
    assert!(!probe.exists() && !next.exists());
    spool.sync_round(false);
    assert!(spool.stats().durable, "probed: {:?}", spool.problem());
    spool.push(batch("a", 2));
    drop(spool);
    let spool = Spool::open_with(dir.path(), 1 << 20, opts(4096)).expect("reopen");
    assert_eq!(
        drain(&spool).await,
        [batch("a", 2)],
        "the probe's segment holds what followed"
    );
}

#[tokio::test]
async fn a_run_is_the_oldest_batch_and_those_of_its_namespace_right_after_it_within_the_limit() {
    let dir = tempfile::tempdir().expect("tmp");
    let spool = Spool::open(dir.path(), 1 << 20).expect("open");
    for i in 0..5 {
        spool.push(batch("a", i));
    }
    spool.push(batch("b", 5));
    spool.push(batch("a", 6));
    let limit = |batches, bytes| RunLimit { batches, bytes };
    let ids = |run: &[SpoolRecord]| run.iter().map(|r| r.id).collect::<Vec<_>>();
    let one = batch("a", 0).payload.len() as u64;
    // The batch limit, then the byte limit (the first always comes), then the namespace.
    assert_eq!(ids(&spool.next_run(limit(3, 1 << 20)).await), [1, 2, 3]);
    assert_eq!(ids(&spool.next_run(limit(64, 2 * one)).await), [1, 2]);
    assert_eq!(ids(&spool.next_run(limit(64, 1)).await), [1]);
    assert_eq!(ids(&spool.next_run(RunLimit::ONE).await), [1]);
    let run = spool.next_run(limit(64, 1 << 20)).await;
    assert_eq!(ids(&run), [1, 2, 3, 4, 5], "stops at namespace b");
    spool.ack_through(run.last().expect("run").id);
    assert_eq!(spool.stats().batches, 2);
    assert_eq!(ids(&spool.next_run(limit(64, 1 << 20)).await), [6]);
    spool.ack_through(6);
    assert_eq!(ids(&spool.next_run(limit(64, 1 << 20)).await), [7]);
    spool.ack_through(7);
    assert!(spool.is_empty());
    spool.sync();
    drop(spool);
    assert!(
        Spool::open(dir.path(), 1 << 20).expect("reopen").is_empty(),
        "a run's ack is stored like single acks"
    );
}

#[tokio::test]
async fn a_run_of_batches_read_back_from_disk_stops_where_the_read_ahead_stopped() {
    let dir = tempfile::tempdir().expect("tmp");
    // No cache: every batch leaves memory once written, and is read back READ_AHEAD at a time.
    let spool = Spool::open_with(
        dir.path(),
        1 << 20,
        SpoolOptions {
            cache_bytes: 0,
            ..opts(1 << 20)
        },
    )
    .expect("open");
    let n = READ_AHEAD + 8;
    for i in 0..n {
        spool.push(batch("a", i));
    }
    let limit = RunLimit {
        batches: 64,
        bytes: 1 << 20,
    };
    let run = spool.next_run(limit).await;
    let ids: Vec<u64> = run.iter().map(|r| r.id).collect();
    assert_eq!(ids, (1..=READ_AHEAD as u64).collect::<Vec<_>>());
    spool.ack_through(READ_AHEAD as u64);
    let rest = spool.next_run(limit).await;
    assert_eq!(rest.len(), 8);
    assert_eq!(rest[0].batch.payload, batch("a", READ_AHEAD).payload);
    spool.ack_through(n as u64);
    assert!(spool.is_empty());
}

/// An output taking runs of up to three batches, recording every run it was handed (the points
/// of each batch) and whether it took it. It fails its first `fail` deliveries (to be sent
/// again), and refuses for good any run holding a batch whose payload says `refuse`.
struct RunOutput {
    fail: usize,
    handed: Arc<Mutex<Vec<Handed>>>,
}

/// A run as [`RunOutput`] was handed it: the points of each batch, and whether it took the run.
type Handed = (Vec<usize>, bool);

impl crate::output::Output for RunOutput {
    fn endpoint(&self) -> String {
        "runs".into()
    }

    fn deliver<'a>(
        &'a mut self,
        batch: &'a Arc<EncodedBatch>,
    ) -> crate::output::BoxFuture<'a, Result<(), crate::output::DeliveryError>> {
        self.deliver_run(std::slice::from_ref(batch))
    }

    fn run_limit(&self) -> RunLimit {
        RunLimit {
            batches: 3,
            bytes: 1 << 20,
        }
    }

    fn deliver_run<'a>(
        &'a mut self,
        run: &'a [Arc<EncodedBatch>],
    ) -> crate::output::BoxFuture<'a, Result<(), crate::output::DeliveryError>> {
        Box::pin(async move {
            use crate::output::DeliveryError::{Reject, Retry};
            if self.fail > 0 {
                self.fail -= 1;
                return Err(Retry("down".into()));
            }
            let bad = run.iter().any(|b| b.payload.starts_with(b"refuse"));
            let points = run.iter().map(|b| b.points as usize).collect();
            self.handed.lock().expect("lock").push((points, !bad));
            if bad {
                return Err(Reject("bad data".into()));
            }
            Ok(())
        })
    }
}

#[tokio::test]
async fn the_delivery_loop_hands_runs_to_an_output_that_takes_them_and_counts_every_batch() {
    use std::sync::atomic::Ordering;
    let spool = Spool::in_memory(1 << 20);
    for i in 0..7 {
        spool.push(batch("a", i));
    }
    spool.push(batch("b", 7));
    let handed = Arc::new(Mutex::new(Vec::new()));
    let stats = Arc::new(crate::output::OutputStats::default());
    let output = Box::new(RunOutput {
        fail: 1,
        handed: Arc::clone(&handed),
    });
    deliver_all(&spool, output, &stats).await;
    let handed = handed.lock().expect("lock");
    assert!(handed.iter().all(|(_, took)| *took), "{handed:?}");
    let lens: Vec<usize> = handed.iter().map(|(points, _)| points.len()).collect();
    assert_eq!(lens, [3, 3, 1, 1], "runs of a, cut at the limit and at b");
    assert_eq!(stats.delivered_batches.load(Ordering::Relaxed), 8);
    assert_eq!(stats.delivered_points.load(Ordering::Relaxed), 16);
    assert!(spool.is_empty());
}

#[tokio::test]
async fn a_run_refused_for_good_is_sent_again_batch_by_batch_and_only_the_bad_one_is_dropped() {
    use std::sync::atomic::Ordering;
    let spool = Spool::in_memory(1 << 20);
    spool.push(batch("a", 0));
    spool.push(EncodedBatch {
        ns: "a".into(),
        points: 3,
        payload: b"refuse me".to_vec(),
    });
    spool.push(batch("a", 2));
    let handed = Arc::new(Mutex::new(Vec::new()));
    let stats = Arc::new(crate::output::OutputStats::default());
    let output = Box::new(RunOutput {
        fail: 0,
        handed: Arc::clone(&handed),
    });
    deliver_all(&spool, output, &stats).await;
    assert_eq!(
        *handed.lock().expect("lock"),
        [
            (vec![2, 3, 2], false),
            (vec![2], true),
            (vec![3], false),
            (vec![2], true)
        ]
    );
    assert_eq!(stats.delivered_batches.load(Ordering::Relaxed), 2);
    assert_eq!(stats.delivered_points.load(Ordering::Relaxed), 4);
    assert_eq!(stats.rejected_batches.load(Ordering::Relaxed), 1);
    assert_eq!(stats.rejected_points.load(Ordering::Relaxed), 3);
    assert!(spool.is_empty());
}
