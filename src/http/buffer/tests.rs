use super::*;
use bytes::Bytes;
use http_body_util::BodyExt;

fn pattern(len: usize, seed: u8) -> Bytes {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

async fn read_all(b: Buffered) -> Vec<u8> {
    b.collect().await.unwrap().to_bytes().to_vec()
}

#[tokio::test]
async fn memory_first_then_the_file_then_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let metrics = BufferMetrics::default();
    // 2 MiB: 128 KiB in memory, the rest in the file.
    let budget = Arc::new(BufferBudget::with_spill_dir(
        2 << 20,
        metrics.clone(),
        Some(tmp.path()),
    ));

    // Declared 100 KiB: fits in memory.
    let a_bytes = pattern(100 * 1024, 1);
    let mut a = budget.writer(Some(a_bytes.len() as u64)).unwrap();
    for c in a_bytes.chunks(7000) {
        assert!(a.push(Bytes::copy_from_slice(c)).await.is_ok());
    }
    let a = a.finish();
    assert_eq!(metrics.memory.get(), 100 * 1024);
    assert_eq!(metrics.file.get(), 0);

    // Declared 300 KiB: no room left in memory, 5 blocks of the file.
    let b_bytes = pattern(300 * 1024, 2);
    let mut b = budget.writer(Some(b_bytes.len() as u64)).unwrap();
    for c in b_bytes.chunks(50_000) {
        assert!(b.push(Bytes::copy_from_slice(c)).await.is_ok());
    }
    let b = b.finish();
    assert_eq!(metrics.file.get(), 300 * 1024);

    // Unknown length: memory while the share has room, then the file,
    // then refused once the whole budget is in use.
    let mut c = budget.writer(None).unwrap();
    let mut pushed = Vec::new();
    let refused = loop {
        let chunk = pattern(10_000, pushed.len() as u8);
        match c.push(chunk.clone()).await {
            Ok(()) => pushed.extend_from_slice(&chunk),
            Err(Refused(back)) => break back,
        }
    };
    assert_eq!(refused.len(), 10_000);
    assert!(metrics.file.get() > 300 * 1024);
    assert_eq!(metrics.refused.get(), 1);
    assert!(budget.writer(Some(64 * 1024)).is_none());
    assert_eq!(metrics.refused.get(), 2);
    let c = c.finish();

    // Every body reads back as it came, and again for a replay.
    assert_eq!(read_all(a.again()).await, a_bytes);
    assert_eq!(read_all(b.again()).await, b_bytes);
    assert_eq!(read_all(b).await, b_bytes);
    assert_eq!(
        http_body::Body::size_hint(&c).exact(),
        Some(pushed.len() as u64)
    );
    assert_eq!(read_all(c.again()).await, pushed);

    // The last copy dropped gives the bytes back.
    drop(c);
    assert_eq!(metrics.file.get(), 0);
    assert_eq!(metrics.memory.get(), 100 * 1024);
    let replay = a.again();
    drop(a);
    assert_eq!(metrics.memory.get(), 100 * 1024);
    drop(replay);
    assert_eq!(metrics.memory.get(), 0);
    assert!(budget.writer(Some(900 * 1024)).is_some());
}

#[tokio::test]
async fn without_a_spill_folder_the_budget_is_the_memory_share() {
    let metrics = BufferMetrics::default();
    let budget = Arc::new(BufferBudget::with_spill_dir(
        2 << 20,
        metrics.clone(),
        Some(Path::new("/nonexistent/authproxy")),
    ));
    assert!(budget.writer(Some(128 * 1024)).is_some());
    assert!(budget.writer(Some(128 * 1024 + 1)).is_none());
}

#[test]
fn the_spill_folder_is_private_and_the_file_has_no_name() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let budget = BufferBudget::with_spill_dir(2 << 20, BufferMetrics::default(), Some(tmp.path()));
    let folder = PathBuf::from(budget.describe());
    assert!(folder.starts_with(tmp.path()), "{folder:?}");
    let mode = std::fs::metadata(&folder).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
    assert_eq!(std::fs::read_dir(&folder).unwrap().count(), 0);
    drop(budget);
    assert!(!folder.exists());
}
