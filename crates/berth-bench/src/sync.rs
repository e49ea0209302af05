//! `sync` suite: `berth_sync::push`/`restore` vs `tar -cf - . | ssh … tar -xf -` and `rsync -a`,
//! all against the same lab sshd, same key, same pinned host key, in one run.
//!
//! The main berth figures open a fresh SSH connection (new pool), like the OpenSSH-based
//! baselines do, so connect + auth is inside every figure on both sides; the "warm" rows reuse
//! one connected transport, as a lease does between its pushes and restores. The cold berth push
//! runs in a child process (`berth-bench sync-child …`) so its peak RSS (`VmHWM`) is that of
//! the push alone, not of the tree generator or the other measurements.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use berth_core::Secret;
use berth_exec::{SshPool, SshTarget, SshTransport};
use berth_sync::{RemoteSpec, SyncOptions};

/// Repetitions per measurement (`BERTH_BENCH_REPS`, default 3); the median is reported.
fn reps() -> usize {
    std::env::var("BERTH_BENCH_REPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(3)
}
const CHANGED: usize = 20;

/// SplitMix64: deterministic, seedable, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const WORDS: &[&str] = &[
    "fn",
    "let",
    "mut",
    "self",
    "impl",
    "struct",
    "enum",
    "match",
    "return",
    "async",
    "await",
    "pub",
    "use",
    "crate",
    "super",
    "where",
    "for",
    "in",
    "if",
    "else",
    "loop",
    "while",
    "Some",
    "None",
    "Ok",
    "Err",
    "Result",
    "Option",
    "String",
    "Vec",
    "u64",
    "usize",
    "bool",
    "true",
    "false",
    "workspace",
    "manifest",
    "transport",
    "remote",
    "local",
    "entry",
    "path",
    "bytes",
    "stream",
    "archive",
    "lease",
    "scope",
    "config",
    "error",
    "value",
    "->",
    "=>",
    "{",
    "}",
    "(",
    ")",
    ";",
    "::",
    "&",
    "<",
    ">",
    "=",
    "+",
    "0",
    "1",
    "42",
    "// TODO",
    "#[derive(Debug)]",
];

/// Text-like bytes: source-code-ish words with random line lengths (compresses ~3-4x with gzip,
/// like real source trees).
fn text(rng: &mut Rng, len: usize, out: &mut Vec<u8>) {
    let end = out.len() + len;
    let mut col = 0;
    while out.len() < end {
        let w = WORDS[rng.below(WORDS.len() as u64) as usize];
        out.extend_from_slice(w.as_bytes());
        col += w.len() + 1;
        if col > 40 + rng.below(60) as usize {
            out.push(b'\n');
            for _ in 0..rng.below(4) * 4 {
                out.push(b' ');
            }
            col = 0;
        } else {
            out.push(b' ');
        }
    }
    out.truncate(end);
}

/// Binary-ish bytes: pseudo-random 4 KiB blocks, each repeated 1–3 times (partly compressible,
/// like object files or images with headers).
fn binary(rng: &mut Rng, len: usize, out: &mut Vec<u8>) {
    let end = out.len() + len;
    while out.len() < end {
        let block: Vec<u8> = (0..512).flat_map(|_| rng.next().to_le_bytes()).collect();
        for _ in 0..1 + rng.below(3) {
            out.extend_from_slice(&block);
        }
    }
    out.truncate(end);
}

fn rel(i: usize) -> PathBuf {
    PathBuf::from(format!("d{:03}/f{:03}.rs", i / 100, i % 100))
}

/// `files` files in directories of 100: every 200th file is a large (~700 KB) half-binary file,
/// the rest are 1–12 KiB of text. 10,000 files ≈ 100 MB. Returns the total byte count.
fn generate(root: &Path, files: usize, seed: u64) -> anyhow::Result<u64> {
    let mut rng = Rng(seed);
    let mut total = 0u64;
    let mut buf = Vec::new();
    for i in 0..files {
        buf.clear();
        if i % 200 == 199 {
            let len = 600_000 + rng.below(200_000) as usize;
            text(&mut rng, len / 2, &mut buf);
            binary(&mut rng, len - len / 2, &mut buf);
        } else {
            let len = 1024 + rng.below(11 * 1024) as usize;
            text(&mut rng, len, &mut buf);
        }
        let p = root.join(rel(i));
        if i % 100 == 0
            && let Some(parent) = p.parent()
        {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&p, &buf)?;
        total += buf.len() as u64;
    }
    Ok(total)
}

/// Rewrites `CHANGED` files of `root` (a different set per `round`, chosen by `salt`) with new
/// text of a different size. The same `(round, salt)` always writes the same bytes.
fn change_files(
    root: &Path,
    files: usize,
    round: usize,
    salt: u64,
) -> anyhow::Result<Vec<PathBuf>> {
    let mut rng = Rng(salt.wrapping_mul(1000).wrapping_add(round as u64));
    let mut out = Vec::with_capacity(CHANGED);
    for k in 0..CHANGED {
        let i = (k * (files / CHANGED) + round * 7 + salt as usize * 3) % files;
        let mut buf = format!("changed round {round} salt {salt} file {k}\n").into_bytes();
        let len = 2000 + rng.below(4000) as usize;
        text(&mut rng, len, &mut buf);
        let p = rel(i);
        std::fs::write(root.join(&p), &buf)?;
        out.push(p);
    }
    Ok(out)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// The account's login shell, from `getent passwd`.
fn login_shell(user: &str) -> String {
    std::process::Command::new("getent")
        .args(["passwd", user])
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .rsplit(':')
                .next()
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "?".to_owned())
}

fn median_u64(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

fn secs(v: &[Duration]) -> String {
    v.iter()
        .map(|d| format!("{:.2}", d.as_secs_f64()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn transport(lab: &berth_lab::LabState) -> anyhow::Result<SshTransport> {
    let key = std::fs::read_to_string(&lab.client_key_path)?;
    let known = std::fs::read_to_string(&lab.known_hosts_path)?;
    let mut target = SshTarget::new(lab.host.clone(), lab.port, lab.username.clone());
    target.private_key = Some(Secret::new(key));
    target.known_hosts = Some(known);
    Ok(SshTransport::new(SshPool::new(), target))
}

/// The `ssh` command line the baselines use: same key, same pinned host key, fresh connection.
fn ssh_cmd(lab: &berth_lab::LabState) -> String {
    format!(
        "ssh -q -o BatchMode=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile={} -i {} -p {}",
        lab.known_hosts_path.display(),
        lab.client_key_path.display(),
        lab.port
    )
}

fn remote_host(lab: &berth_lab::LabState) -> String {
    format!("{}@{}", lab.username, lab.host)
}

async fn sh(script: &str, cwd: &Path) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let status = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(cwd)
        .status()
        .await?;
    let took = start.elapsed();
    if !status.success() {
        bail!("baseline failed ({status}): {script}");
    }
    Ok(took)
}

async fn rsync(lab: &berth_lab::LabState, from: &str, to: &str) -> anyhow::Result<Duration> {
    sh(
        &format!("rsync -a -e '{}' {from} {to}", ssh_cmd(lab)),
        Path::new("/"),
    )
    .await
}

/// Output of one `sync-child` run.
struct ChildPush {
    wall: Duration,
    hwm_before_kb: u64,
    hwm_after_kb: u64,
}

/// Runs the berth push in a child process (fresh process, fresh connection) and reads back its
/// peak RSS before and after the push.
async fn child_push(
    lab_dir: &Path,
    ws: &Path,
    root: &str,
    scope: &str,
    files: usize,
) -> anyhow::Result<ChildPush> {
    let (c, sent, full) = child_run(lab_dir, ws, root, scope, &[]).await?;
    if full != 1 || sent != files as u64 {
        bail!("cold berth push sent {sent} files (full = {full}), expected a full push of {files}");
    }
    Ok(c)
}

/// Runs one berth operation in a child process (`extra`: none for a push, `restore <run>` for
/// a restore) and returns its wall time, peak RSS and the two counts it prints.
async fn child_run(
    lab_dir: &Path,
    ws: &Path,
    root: &str,
    scope: &str,
    extra: &[&str],
) -> anyhow::Result<(ChildPush, u64, u64)> {
    let exe = std::env::current_exe()?;
    let start = Instant::now();
    let out = tokio::process::Command::new(exe)
        .arg("sync-child")
        .arg(lab_dir)
        .arg(ws)
        .arg(root)
        .arg(scope)
        .args(extra)
        .output()
        .await?;
    let wall = start.elapsed();
    if !out.status.success() {
        bail!(
            "berth push child failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8(out.stdout)?;
    let nums: Vec<u64> = text
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .with_context(|| format!("unexpected child output {text:?}"))?;
    let [before, after, a, b] = nums[..] else {
        bail!("unexpected child output {text:?}");
    };
    let c = ChildPush {
        wall,
        hwm_before_kb: before,
        hwm_after_kb: after,
    };
    Ok((c, a, b))
}

fn vm_hwm_kb() -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .context("no VmHWM in /proc/self/status")?;
    Ok(line
        .trim_start_matches("VmHWM:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()?)
}

/// `berth-bench sync-child <lab dir> <ws> <root> <scope>`: one push, then prints
/// `<VmHWM before kB> <VmHWM after kB> <files sent> <full 0|1>`. With `restore <run>` after
/// the scope: one restore, printing `<before> <after> <files received> <paths applied>`.
pub async fn child(args: &[String]) -> anyhow::Result<()> {
    let (lab_dir, ws, root, scope, run) = match args {
        [l, w, r, s] => (l, w, r, s, None),
        [l, w, r, s, op, run] if op == "restore" => (l, w, r, s, Some(run)),
        _ => bail!("usage: berth-bench sync-child <lab dir> <ws> <root> <scope> [restore <run>]"),
    };
    let lab = berth_lab::status(Path::new(lab_dir))?.context("the lab is not running")?;
    let before = vm_hwm_kb()?;
    let t = transport(&lab)?;
    let spec = RemoteSpec::new(root.as_str(), scope.as_str())?;
    let opts = SyncOptions::default();
    let (a, b) = match run {
        None => {
            let rep = berth_sync::push(&t, Path::new(ws), &spec, &opts).await?;
            (rep.files, u64::from(rep.full))
        }
        Some(run) => {
            let rep = berth_sync::restore(&t, Path::new(ws), &spec, run, &opts).await?;
            (rep.files, rep.applied.len() as u64)
        }
    };
    let after = vm_hwm_kb()?;
    println!("{before} {after} {a} {b}");
    Ok(())
}

pub async fn run() -> anyhow::Result<()> {
    let files: usize = std::env::var("BERTH_BENCH_FILES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let dir = tempfile::tempdir()?;
    let lab_dir = dir.path().join("lab");
    // `BERTH_BENCH_USER=<existing account>`: every tool logs in as that account (needs root),
    // e.g. one with a stock shell startup instead of this machine's root `~/.bashrc`.
    let user = std::env::var("BERTH_BENCH_USER")
        .ok()
        .filter(|u| !u.is_empty());
    if user.is_some() {
        // The account must reach the lab directory inside this one.
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711))?;
    }
    let (lab, _) =
        berth_lab::up_as(&lab_dir, user.as_deref()).context("failed to start the lab sshd")?;
    eprintln!(
        "lab sshd on port {} logging in as {}",
        lab.port, lab.username
    );
    let result = run_inner(&lab, &lab_dir, dir.path(), files).await;
    berth_lab::down(&lab_dir)?;
    result
}

async fn run_inner(
    lab: &berth_lab::LabState,
    lab_dir: &Path,
    tmp: &Path,
    files: usize,
) -> anyhow::Result<()> {
    let src = tmp.join("src");
    let small = tmp.join("small");
    let t0 = Instant::now();
    let bytes = generate(&src, files, 0xBE57)?;
    let small_bytes = generate(&small, files / 10, 0x5A11)?;
    eprintln!(
        "generated {files} files / {bytes} bytes and {} files / {small_bytes} bytes in {:.1} s",
        files / 10,
        t0.elapsed().as_secs_f64()
    );
    let bench_root = lab.workspace.join("bench-root");
    std::fs::create_dir_all(&bench_root)?;
    if std::env::var("BERTH_BENCH_USER").is_ok_and(|u| u == lab.username) {
        let ok = std::process::Command::new("chown")
            .arg(format!("{}:", lab.username))
            .arg(&bench_root)
            .status()?
            .success();
        if !ok {
            bail!("cannot give {} to {}", bench_root.display(), lab.username);
        }
    }
    let root = bench_root.display().to_string();
    let host = remote_host(lab);
    let ssh = ssh_cmd(lab);
    // berth's hash cache treats files modified within 2 s of a scan as "racy" and rehashes
    // them; real trees are not written the instant before a push.
    tokio::time::sleep(Duration::from_secs(3)).await;

    // 1. Cold push into empty destinations; the three tools interleaved per repetition.
    let (mut tar_t, mut rsync_t, mut berth_t) = (vec![], vec![], vec![]);
    let mut hwm = vec![];
    let mut hwm_start = vec![];
    for r in 0..reps() {
        let d = bench_root.join(format!("tar-{r}"));
        tar_t.push(
            sh(
                &format!(
                    "tar -cf - . | {ssh} {host} 'mkdir -p {} && tar -xf - -C {}'",
                    d.display(),
                    d.display()
                ),
                &src,
            )
            .await?,
        );
        let d = bench_root.join(format!("rsync-{r}"));
        rsync_t.push(
            rsync(
                lab,
                &format!("{}/", src.display()),
                &format!("{host}:{}/", d.display()),
            )
            .await?,
        );
        let c = child_push(lab_dir, &src, &root, &format!("cold-{r}"), files).await?;
        berth_t.push(c.wall);
        hwm.push(c.hwm_after_kb);
        hwm_start.push(c.hwm_before_kb);
        eprintln!(
            "cold {r}: tar {:.2} s, rsync {:.2} s, berth {:.2} s (VmHWM {} kB)",
            tar_t[r].as_secs_f64(),
            rsync_t[r].as_secs_f64(),
            berth_t[r].as_secs_f64(),
            c.hwm_after_kb
        );
    }
    // Peak RSS of the same push over a tree a tenth the size.
    let mut hwm_small = vec![];
    for r in 0..reps() {
        let c = child_push(lab_dir, &small, &root, &format!("small-{r}"), files / 10).await?;
        hwm_small.push(c.hwm_after_kb);
    }
    // `BERTH_BENCH_RSS_FILES=<n>`: also the peak RSS of one cold push of an n-file tree (same
    // generator), to see how memory grows with the tree.
    let big = match std::env::var("BERTH_BENCH_RSS_FILES")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        Some(n) => {
            let big_dir = tmp.join("big");
            let big_bytes = generate(&big_dir, n, 0xB16)?;
            tokio::time::sleep(Duration::from_secs(3)).await;
            let c = child_push(lab_dir, &big_dir, &root, "big", n).await?;
            eprintln!(
                "big: {n} files / {big_bytes} bytes: berth {:.2} s, VmHWM {} kB",
                c.wall.as_secs_f64(),
                c.hwm_after_kb
            );
            // Then a resumed push of 20 local changes and a restore of 20 remote ones, each in
            // its own process too.
            change_files(&big_dir, n, 0, 1)?;
            let (inc, sent, full) = child_run(lab_dir, &big_dir, &root, "big", &[]).await?;
            if full != 0 || sent != CHANGED as u64 {
                bail!("big incremental push: sent {sent}, full = {full}");
            }
            let big_remote = PathBuf::from(RemoteSpec::new(root.as_str(), "big")?.ws());
            change_files(&big_remote, n, 0, 2)?;
            let (pull, _, applied) =
                child_run(lab_dir, &big_dir, &root, "big", &["restore", "big-pull"]).await?;
            if applied != CHANGED as u64 {
                bail!("big restore applied {applied}, expected {CHANGED}");
            }
            eprintln!(
                "big: incremental push {:.2} s, VmHWM {} kB; restore {:.2} s, VmHWM {} kB",
                inc.wall.as_secs_f64(),
                inc.hwm_after_kb,
                pull.wall.as_secs_f64(),
                pull.hwm_after_kb
            );
            std::fs::remove_dir_all(&big_dir)?;
            Some((n, big_bytes, [c, inc, pull]))
        }
        None => None,
    };

    // 2. Incremental: 20 files changed locally; rsync into its copy from cold rep 0, berth
    //    resumes scope cold-0 (pushed by the child above; the marker makes it incremental).
    let spec = RemoteSpec::new(root.as_str(), "cold-0")?;
    let opts = SyncOptions::default();
    let rsync0 = format!("{host}:{}/", bench_root.join("rsync-0").display());
    let (mut inc_rsync, mut inc_berth, mut inc_warm) = (vec![], vec![], vec![]);
    // A lease keeps its pooled connection: the "warm" rows reuse one already-connected
    // transport (the baselines still pay a fresh OpenSSH connection, as a script would).
    let warm = transport(lab)?;
    berth_exec::Transport::run(&warm, "true", bytes::Bytes::new()).await?;
    for r in 0..reps() {
        change_files(&src, files, r, 1)?;
        inc_rsync.push(rsync(lab, &format!("{}/", src.display()), &rsync0).await?);
        let start = Instant::now();
        let t = transport(lab)?;
        let rep = berth_sync::push(&t, &src, &spec, &opts).await?;
        inc_berth.push(start.elapsed());
        if rep.full || rep.files != CHANGED as u64 {
            bail!(
                "incremental berth push {r}: full = {}, files = {} (expected incremental, {CHANGED})",
                rep.full,
                rep.files
            );
        }
        change_files(&src, files, r, 3)?;
        let start = Instant::now();
        let rep = berth_sync::push(&warm, &src, &spec, &opts).await?;
        inc_warm.push(start.elapsed());
        if rep.full || rep.files != CHANGED as u64 {
            bail!(
                "warm incremental berth push {r}: full = {}, files = {}",
                rep.full,
                rep.files
            );
        }
        // Untimed: keep the rsync copy equal to the pushed tree.
        rsync(lab, &format!("{}/", src.display()), &rsync0).await?;
    }

    // 3. Pull-back: the same 20 files changed on both remote copies (on disk: the lab is on this
    //    machine); rsync into a local copy of rsync-0, berth restores into the workspace.
    let pull_local = tmp.join("pull-local");
    rsync(lab, &rsync0, &format!("{}/", pull_local.display())).await?;
    let berth_remote = PathBuf::from(spec.ws());
    let rsync_remote = bench_root.join("rsync-0");
    let (mut pull_rsync, mut pull_berth, mut pull_warm) = (vec![], vec![], vec![]);
    let mut pulled = vec![];
    for r in 0..reps() {
        change_files(&berth_remote, files, r, 2)?;
        pulled.extend(change_files(&rsync_remote, files, r, 2)?);
        pull_rsync.push(rsync(lab, &rsync0, &format!("{}/", pull_local.display())).await?);
        let start = Instant::now();
        let t = transport(lab)?;
        let rep = berth_sync::restore(&t, &src, &spec, &format!("bench-pull-{r}"), &opts).await?;
        pull_berth.push(start.elapsed());
        if rep.applied.len() != CHANGED || !rep.conflicts.is_empty() || !rep.rejected.is_empty() {
            bail!(
                "berth restore {r}: applied {}, conflicts {}, rejected {} (expected {CHANGED}, 0, 0)",
                rep.applied.len(),
                rep.conflicts.len(),
                rep.rejected.len()
            );
        }
        change_files(&berth_remote, files, r, 4)?;
        pulled.extend(change_files(&rsync_remote, files, r, 4)?);
        let start = Instant::now();
        let rep =
            berth_sync::restore(&warm, &src, &spec, &format!("bench-warm-{r}"), &opts).await?;
        pull_warm.push(start.elapsed());
        if rep.applied.len() != CHANGED || !rep.conflicts.is_empty() || !rep.rejected.is_empty() {
            bail!("warm berth restore {r}: applied {}", rep.applied.len());
        }
        // Untimed: keep the rsync local copy equal.
        rsync(lab, &rsync0, &format!("{}/", pull_local.display())).await?;
    }
    // Both pulls must have produced the same bytes.
    for p in &pulled {
        if std::fs::read(src.join(p))? != std::fs::read(pull_local.join(p))? {
            bail!(
                "berth and rsync pulled different content for {}",
                p.display()
            );
        }
    }

    // Fixed per-operation costs on this sshd, for reading the 20-file rows: a fresh OpenSSH
    // `ssh host true` (what every rsync run pays) and one exec channel on a warm connection
    // (what each berth step outside the control shell pays).
    let (mut fresh_true, mut chan_true, mut fresh_berth) = (vec![], vec![], vec![]);
    for _ in 0..5 {
        fresh_true.push(sh(&format!("{ssh} {host} true"), Path::new("/")).await?);
        // The floor of every berth operation on a fresh connection: connect, authenticate,
        // start the control shell (one channel through the login shell), run one step.
        let start = Instant::now();
        let t = transport(lab)?;
        let out = berth_exec::Transport::run(&t, "true", bytes::Bytes::new()).await?;
        if !out.outcome.success() {
            bail!("fresh-connection `true` failed: {}", out.outcome);
        }
        fresh_berth.push(start.elapsed());
        let start = Instant::now();
        let out = berth_exec::Transport::exec(&warm, berth_exec::ExecRequest::new("true"))
            .await?
            .wait()
            .await?;
        if !out.success() {
            bail!("exec-channel `true` failed: {out}");
        }
        chan_true.push(start.elapsed());
    }

    let (tar_m, rsync_m, berth_m) = (
        median(tar_t.clone()),
        median(rsync_t.clone()),
        median(berth_t.clone()),
    );
    let (inc_r, inc_b) = (median(inc_rsync.clone()), median(inc_berth.clone()));
    let (pull_r, pull_b) = (median(pull_rsync.clone()), median(pull_berth.clone()));
    let mb = bytes as f64 / 1e6;
    println!(
        "Tree: {files} files, {mb:.1} MB ({} small files of 1–12 KiB text, {} files of ~700 KB half text / half repeated pseudo-random blocks). Median of {}; every run opens a fresh SSH connection.",
        files - files / 200,
        files / 200,
        reps()
    );
    println!(
        "Remote account: `{}` (login shell `{}`).",
        lab.username,
        login_shell(&lab.username)
    );
    println!();
    println!("| measurement | median | runs (s) | target |");
    println!("|---|---|---|---|");
    println!(
        "| cold: `tar -cf - . \\| ssh host 'mkdir -p D && tar -xf - -C D'` (baseline) | {:.2} s | {} | |",
        tar_m.as_secs_f64(),
        secs(&tar_t)
    );
    println!(
        "| cold: `rsync -a src/ host:D/` (baseline) | {:.2} s | {} | |",
        rsync_m.as_secs_f64(),
        secs(&rsync_t)
    );
    println!(
        "| cold: `berth_sync::push` (child process, connect included) | {:.2} s | {} | |",
        berth_m.as_secs_f64(),
        secs(&berth_t)
    );
    println!(
        "| **ratio cold berth / tar pipe** | **{:.2}** | | ≤ 1.0 {} |",
        berth_m.as_secs_f64() / tar_m.as_secs_f64(),
        mark(berth_m.as_secs_f64() / tar_m.as_secs_f64() <= 1.0)
    );
    println!(
        "| ratio cold berth / rsync | {:.2} | | |",
        berth_m.as_secs_f64() / rsync_m.as_secs_f64()
    );
    println!(
        "| incremental ({CHANGED} files changed locally): `rsync -a` | {:.3} s | {} | |",
        inc_r.as_secs_f64(),
        secs(&inc_rsync)
    );
    println!(
        "| incremental: `berth_sync::push` (resumed) | {:.3} s | {} | |",
        inc_b.as_secs_f64(),
        secs(&inc_berth)
    );
    println!(
        "| **ratio incremental berth / rsync** | **{:.2}** | | ≤ 0.5 {} |",
        inc_b.as_secs_f64() / inc_r.as_secs_f64(),
        mark(inc_b.as_secs_f64() / inc_r.as_secs_f64() <= 0.5)
    );
    println!(
        "| incremental: `berth_sync::push` on a warm pooled connection | {:.3} s | {} | |",
        median(inc_warm.clone()).as_secs_f64(),
        secs(&inc_warm)
    );
    println!(
        "| ratio incremental berth (warm) / rsync | {:.2} | | |",
        median(inc_warm.clone()).as_secs_f64() / inc_r.as_secs_f64()
    );
    println!(
        "| pull-back ({CHANGED} files changed remotely): `rsync -a host:D/ local/` | {:.3} s | {} | |",
        pull_r.as_secs_f64(),
        secs(&pull_rsync)
    );
    println!(
        "| pull-back: `berth_sync::restore` | {:.3} s | {} | |",
        pull_b.as_secs_f64(),
        secs(&pull_berth)
    );
    println!(
        "| **ratio pull-back berth / rsync** | **{:.2}** | | ≤ 0.5 {} |",
        pull_b.as_secs_f64() / pull_r.as_secs_f64(),
        mark(pull_b.as_secs_f64() / pull_r.as_secs_f64() <= 0.5)
    );
    println!(
        "| pull-back: `berth_sync::restore` on a warm pooled connection | {:.3} s | {} | |",
        median(pull_warm.clone()).as_secs_f64(),
        secs(&pull_warm)
    );
    println!(
        "| ratio pull-back berth (warm) / rsync | {:.2} | | |",
        median(pull_warm.clone()).as_secs_f64() / pull_r.as_secs_f64()
    );
    println!(
        "| fixed cost: fresh OpenSSH `ssh host true`, median of 5 | {:.3} s | {} | |",
        median(fresh_true.clone()).as_secs_f64(),
        secs(&fresh_true)
    );
    println!(
        "| fixed cost: fresh `SshTransport` connect + one control-shell step `true`, median of 5 | {:.3} s | {} | |",
        median(fresh_berth.clone()).as_secs_f64(),
        secs(&fresh_berth)
    );
    println!(
        "| fixed cost: one exec channel `true` on the warm connection, median of 5 | {:.3} s | {} | |",
        median(chan_true.clone()).as_secs_f64(),
        secs(&chan_true)
    );
    println!(
        "| peak RSS (VmHWM) of the push process before the push | {} kB | {:?} | |",
        median_u64(hwm_start.clone()),
        hwm_start
    );
    println!(
        "| peak RSS of the push process, cold push of {} files / {:.1} MB | {} kB | {:?} | |",
        files / 10,
        small_bytes as f64 / 1e6,
        median_u64(hwm_small.clone()),
        hwm_small
    );
    println!(
        "| peak RSS of the push process, cold push of {files} files / {mb:.1} MB | {} kB | {:?} | |",
        median_u64(hwm.clone()),
        hwm
    );
    if let Some((n, b, [cold, inc, pull])) = big {
        let mb = b as f64 / 1e6;
        for (what, c) in [
            ("the push process, cold push of", cold),
            ("the push process, resumed push of 20 changes to", inc),
            ("the restore process, restore of 20 remote changes to", pull),
        ] {
            println!(
                "| peak RSS of {what} {n} files / {mb:.1} MB (one run) | {} kB | | |",
                c.hwm_after_kb
            );
        }
    }
    Ok(())
}

fn mark(ok: bool) -> &'static str {
    if ok { "✓" } else { "✗" }
}
