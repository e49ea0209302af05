//! A network namespace joined to this one by a veth pair: a second "host" with its own address,
//! whose link a test can cut silently (packets dropped, no reset) and heal again.
//!
//! Needs root and `ip` (Debian package `iproute2`). Under `CI=true` a missing prerequisite is an
//! error, never a skip. Removed on `Drop`.

use std::process::{Command, Stdio};

use anyhow::{Context as _, bail};

/// One namespace with a /30 link to the current namespace.
#[derive(Debug)]
pub struct Netns {
    /// The namespace's name (`ip netns exec <name> …`).
    pub name: String,
    /// The namespace's address, reachable from here.
    pub ip: String,
    host_if: String,
    ns_if: String,
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("failed to run `ip` (install iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

impl Netns {
    /// Whether namespaces can be made here (root and `ip`). Under `CI=true` a missing one is an
    /// error.
    pub fn available() -> anyhow::Result<bool> {
        let has_ip = Command::new("ip")
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        crate::require(
            "network namespaces (root and `ip` from iproute2)",
            has_ip && is_root(),
        )
    }

    /// Create a namespace with a fresh /30 in 10.128.0.0/9 (tests run in parallel processes;
    /// a taken subnet is retried with another).
    pub fn create() -> anyhow::Result<Netns> {
        let mut last = None;
        for _ in 0..8 {
            let r = uuid::Uuid::new_v4().as_u128() as u32;
            let tag = format!("{:06x}", r & 0xff_ffff);
            let b = 128 + ((r >> 24) & 0x7f);
            let c = (r >> 8) & 0xff;
            let d = r & 0xfc;
            let ns = Netns {
                name: format!("berth-t{tag}"),
                ip: format!("10.{b}.{c}.{}", d + 2),
                host_if: format!("bth{tag}"),
                ns_if: format!("btn{tag}"),
            };
            match ns.set_up(&format!("10.{b}.{c}.{}", d + 1)) {
                Ok(()) => return Ok(ns),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("failed to create a network namespace")))
    }

    fn set_up(&self, host_ip: &str) -> anyhow::Result<()> {
        ip(&["netns", "add", &self.name])?;
        let steps: [&[&str]; 8] = [
            &[
                "link",
                "add",
                &self.host_if,
                "type",
                "veth",
                "peer",
                "name",
                &self.ns_if,
            ],
            &["link", "set", &self.ns_if, "netns", &self.name],
            &[
                "addr",
                "add",
                &format!("{host_ip}/30"),
                "dev",
                &self.host_if,
            ],
            &["link", "set", &self.host_if, "up"],
            &[
                "-n",
                &self.name,
                "addr",
                "add",
                &format!("{}/30", self.ip),
                "dev",
                &self.ns_if,
            ],
            &["-n", &self.name, "link", "set", &self.ns_if, "up"],
            &["-n", &self.name, "link", "set", "lo", "up"],
            &["-n", &self.name, "route", "add", "default", "via", host_ip],
        ];
        for step in steps {
            if let Err(e) = ip(step) {
                self.remove();
                return Err(e);
            }
        }
        Ok(())
    }

    /// The argv prefix that runs a command inside the namespace.
    pub fn exec_prefix(&self) -> [&str; 3] {
        ["netns", "exec", &self.name]
    }

    /// Cut the link silently: the namespace's side goes down, so packets in flight are dropped
    /// without a reset and established connections hang until a timeout notices.
    pub fn cut(&self) -> anyhow::Result<()> {
        ip(&["-n", &self.name, "link", "set", &self.ns_if, "down"])
    }

    /// Bring the link back; established connections resume where they hung.
    pub fn heal(&self) -> anyhow::Result<()> {
        ip(&["-n", &self.name, "link", "set", &self.ns_if, "up"])?;
        // The default route goes with the link; put it back.
        let host_ip = {
            let mut parts: Vec<u32> = self.ip.split('.').filter_map(|p| p.parse().ok()).collect();
            if let Some(last) = parts.last_mut() {
                *last -= 1;
            }
            parts
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(".")
        };
        let _ = ip(&["-n", &self.name, "route", "add", "default", "via", &host_ip]);
        Ok(())
    }

    fn remove(&self) {
        let _ = ip(&["netns", "del", &self.name]);
        // Deleting the namespace deletes its veth end and so the pair; this is for a half-made one.
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.remove();
    }
}
