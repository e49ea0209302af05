//! `LocalTransport` through the public `Transport` seam: the same streaming guarantees as SSH.

use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_exec::{ExecRequest, LocalTransport, Output, Transport};
use tokio::io::AsyncReadExt;

fn transport() -> Arc<dyn Transport> {
    Arc::new(LocalTransport::new())
}

#[tokio::test]
async fn streams_100_mb_of_stdout() {
    let t = transport();
    let mut h = t
        .exec(ExecRequest::new("head -c 104857600 /dev/zero"))
        .await
        .unwrap();
    let mut n = 0;
    while let Some(o) = h.next_output().await {
        if let Output::Stdout(b) = o {
            n += b.len();
        }
    }
    assert!(h.wait().await.unwrap().success());
    assert_eq!(n, 104_857_600);
}

#[tokio::test]
async fn echoes_20_mb_of_stdin_while_reading_stdout_without_deadlock() {
    let t = transport();
    let size = 20 * 1024 * 1024;
    let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    let h = t
        .exec(ExecRequest::new("cat").stdin_reader(std::io::Cursor::new(data.clone())))
        .await
        .unwrap();
    let c = tokio::time::timeout(Duration::from_secs(60), h.collect(usize::MAX))
        .await
        .expect("stdin/stdout deadlocked")
        .unwrap();
    assert!(c.outcome.success());
    assert!(c.stdout == data);
    let c = t
        .exec(ExecRequest::new("wc -c").stdin_reader(tokio::io::repeat(1).take(size as u64)))
        .await
        .unwrap()
        .collect(100)
        .await
        .unwrap();
    assert_eq!(c.stdout_text().trim(), size.to_string());
}

#[tokio::test]
async fn output_caps_keep_the_head_and_flag_truncation() {
    let t = transport();
    let c = t
        .exec(ExecRequest::new("head -c 100000 /dev/zero; echo err >&2"))
        .await
        .unwrap()
        .collect(1000)
        .await
        .unwrap();
    assert_eq!(c.stdout.len(), 1000);
    assert!(c.stdout_truncated && !c.stderr_truncated);
    assert_eq!(c.stderr_text(), "err\n");
}

#[tokio::test]
async fn output_arrives_while_the_command_runs() {
    let t = transport();
    let mut h = t
        .exec(ExecRequest::new("echo first; sleep 2; echo second"))
        .await
        .unwrap();
    let start = Instant::now();
    assert_eq!(
        h.next_output().await,
        Some(Output::Stdout(bytes::Bytes::from_static(b"first\n")))
    );
    assert!(start.elapsed() < Duration::from_secs(1));
    assert!(h.wait().await.unwrap().success());
}

#[tokio::test]
async fn describe_and_identity_name_the_local_environment() {
    let t = transport();
    assert_eq!(t.describe(), "local environment");
    assert_eq!(t.identity().transport, "local");
    assert_eq!(t.identity().host, None);
}
