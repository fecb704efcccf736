//! A network "slot" per test daemon: its own default bridge name, bridge-name prefix for
//! user networks, and a /20 of addresses (10.208.0.0/12 split in 256), held with an flock
//! so concurrent test processes never share one. Daemons run with `ip-forward` and
//! `ip-masq` off: test traffic never leaves the host.
//!
//! When the slot is released (and before it is used, in case an earlier holder crashed)
//! everything made in it is removed: bridge devices with its names and the iptables rules
//! (and per-container CNI chains) that mention its addresses. Namespace files are mounts
//! under the daemon's state dir and go with the daemon's other mounts.

use std::fs::File;
use std::net::Ipv4Addr;
use std::process::Command;

use nix::fcntl::{Flock, FlockArg};

const SLOTS: u32 = 256;
const LOCK_DIR: &str = "/tmp/berth-it-net";

pub struct NetSlot {
    pub index: u32,
    /// Released (after `clean`) when the slot is dropped.
    _lock: Flock<File>,
}

impl NetSlot {
    /// Takes the first free slot.
    pub fn acquire() -> NetSlot {
        std::fs::create_dir_all(LOCK_DIR).expect("creating the network slot lock dir");
        let start = std::process::id() % SLOTS;
        for offset in 0..SLOTS {
            let index = (start + offset) % SLOTS;
            let file = File::create(format!("{LOCK_DIR}/slot-{index}.lock")).expect("creating a slot lock");
            if let Ok(lock) = Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                let slot = NetSlot { index, _lock: lock };
                slot.clean();
                return slot;
            }
        }
        panic!("all {SLOTS} network slots are taken");
    }

    pub fn bridge(&self) -> String {
        format!("bt{}", self.index)
    }

    pub fn bridge_prefix(&self) -> String {
        format!("bt{}-", self.index)
    }

    /// The slot's /20: (network address, prefix).
    pub fn block(&self) -> (Ipv4Addr, u8) {
        let base = u32::from(Ipv4Addr::new(10, 208, 0, 0)) + self.index * 4096;
        (Ipv4Addr::from(base), 20)
    }

    pub fn default_subnet(&self) -> String {
        format!("{}/24", self.block().0)
    }

    /// The `[network]` section for a daemon using this slot.
    pub fn config(&self) -> String {
        let (base, prefix) = self.block();
        format!(
            "[network]\nbridge = \"{}\"\nbridge-prefix = \"{}\"\nsubnet = \"{}\"\naddress-pools = [\"{base}/{prefix}\"]\nip-forward = false\nip-masq = false\n",
            self.bridge(),
            self.bridge_prefix(),
            self.default_subnet()
        )
    }

    fn in_block(&self, ip: Ipv4Addr) -> bool {
        let (base, prefix) = self.block();
        let mask = u32::MAX << (32 - prefix);
        u32::from(ip) & mask == u32::from(base)
    }

    fn owns_device(&self, name: &str) -> bool {
        name == self.bridge() || name.starts_with(&self.bridge_prefix())
    }

    /// Host devices made in this slot.
    pub fn devices(&self) -> Vec<String> {
        std::fs::read_dir("/sys/class/net")
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|name| self.owns_device(name))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// iptables rules (`iptables-save` lines, per table) that mention the slot's
    /// addresses or jump to a chain that does.
    pub fn iptables_rules(&self) -> Vec<(String, String)> {
        let mut found = Vec::new();
        for table in ["filter", "nat"] {
            let (rules, doomed) = self.table_rules(table);
            for rule in rules {
                if self.mentions_block(&rule)
                    || jumps_to(&rule, &doomed)
                    || doomed.iter().any(|c| rule_chain(&rule) == c)
                {
                    found.push((table.to_string(), rule));
                }
            }
        }
        found
    }

    fn table_rules(&self, table: &str) -> (Vec<String>, Vec<String>) {
        let out = Command::new("iptables-save").args(["-t", table]).output();
        let text = out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
        let rules: Vec<String> = text.lines().filter(|l| l.starts_with("-A ")).map(str::to_string).collect();
        // Per-container chains (portmap's CNI-DN-*, bridge's masquerade CNI-<hash>) whose
        // rules point at our addresses; the shared CNI-HOSTPORT-* and CNI-FORWARD/ADMIN
        // chains stay (other daemons use them).
        let shared = |chain: &str| chain.starts_with("CNI-HOSTPORT-") || chain == "CNI-FORWARD" || chain == "CNI-ADMIN";
        let mut doomed: Vec<String> = rules
            .iter()
            .filter(|r| self.mentions_block(r))
            .map(|r| rule_chain(r).to_string())
            .filter(|chain| chain.starts_with("CNI-") && !shared(chain))
            .collect();
        doomed.sort();
        doomed.dedup();
        (rules, doomed)
    }

    fn mentions_block(&self, rule: &str) -> bool {
        rule.split(|c: char| !(c.is_ascii_digit() || c == '.'))
            .filter_map(|token| token.parse::<Ipv4Addr>().ok())
            .any(|ip| self.in_block(ip))
    }

    /// Removes the slot's devices and iptables rules.
    pub fn clean(&self) {
        for table in ["filter", "nat"] {
            for _ in 0..3 {
                let (rules, doomed) = self.table_rules(table);
                let mut script = format!("*{table}\n");
                let mut any = false;
                for rule in &rules {
                    let chain = rule_chain(rule);
                    if doomed.iter().any(|d| d == chain) {
                        continue;
                    }
                    if self.mentions_block(rule) || jumps_to(rule, &doomed) {
                        script.push_str(&format!("-D {}\n", &rule[3..]));
                        any = true;
                    }
                }
                for chain in &doomed {
                    script.push_str(&format!("-F {chain}\n-X {chain}\n"));
                    any = true;
                }
                script.push_str("COMMIT\n");
                if !any {
                    break;
                }
                let _ = run_with_input(Command::new("iptables-restore").arg("--noflush"), &script);
            }
        }
        for device in self.devices() {
            let _ = Command::new("ip").args(["link", "del", &device]).output();
        }
    }
}

fn rule_chain(rule: &str) -> &str {
    rule.split_whitespace().nth(1).unwrap_or_default()
}

fn jumps_to(rule: &str, chains: &[String]) -> bool {
    let words: Vec<&str> = rule.split_whitespace().collect();
    words.windows(2).any(|w| (w[0] == "-j" || w[0] == "-g") && chains.iter().any(|c| c == w[1]))
}

fn run_with_input(command: &mut Command, input: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut child = command.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::null()).spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input.as_bytes())?;
    }
    child.wait()?;
    Ok(())
}

impl Drop for NetSlot {
    fn drop(&mut self) {
        self.clean();
    }
}
