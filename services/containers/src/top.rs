//! `docker top`: the host's `ps` output, keeping only the container's processes.

use berth_proto::tasks::v1::TopProcess;

use crate::error::{Error, Result};

/// Splits `ps` output into titles and the rows whose PID is in `pids`. The last column
/// (the command) may contain spaces, so rows are split into as many fields as titles.
pub fn filter_ps(output: &str, pids: &[u32]) -> Result<(Vec<String>, Vec<TopProcess>)> {
    let mut lines = output.lines();
    let header = lines.next().ok_or_else(|| Error::InvalidArgument("ps printed nothing".into()))?;
    let titles: Vec<String> = header.split_whitespace().map(str::to_string).collect();
    let pid_column = titles
        .iter()
        .position(|t| t == "PID")
        .ok_or_else(|| Error::InvalidArgument("ps output has no PID column; pass options that include it".into()))?;
    let mut processes = Vec::new();
    for line in lines {
        let fields = split_fields(line, titles.len());
        let Some(pid) = fields.get(pid_column).and_then(|p| p.parse::<u32>().ok()) else { continue };
        if pids.contains(&pid) {
            processes.push(TopProcess { fields });
        }
    }
    Ok((titles, processes))
}

fn split_fields(line: &str, count: usize) -> Vec<String> {
    let mut fields = Vec::with_capacity(count);
    let mut rest = line.trim_start();
    while fields.len() + 1 < count {
        let Some(end) = rest.find(char::is_whitespace) else { break };
        fields.push(rest[..end].to_string());
        rest = rest[end..].trim_start();
    }
    if !rest.is_empty() {
        fields.push(rest.to_string());
    }
    fields
}

/// Total CPU time of the host in nanoseconds (the "system" figure `docker stats` divides by).
pub fn system_cpu_ns() -> u64 {
    let ticks_per_second =
        nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().unwrap_or(100).max(1) as u64;
    std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|text| {
            let line = text.lines().find(|l| l.starts_with("cpu "))?;
            Some(line.split_whitespace().skip(1).filter_map(|v| v.parse::<u64>().ok()).sum::<u64>())
        })
        .map(|ticks| ticks * 1_000_000_000 / ticks_per_second)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_only_container_pids_and_whole_commands() {
        let output = "UID PID PPID C STIME TTY TIME CMD\nroot 1 0 0 10:00 ? 00:00:01 /sbin/init splash\nroot 42 1 0 10:01 ? 00:00:00 sleep 100\n";
        let (titles, rows) = filter_ps(output, &[42]).unwrap();
        assert_eq!(titles.len(), 8);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].fields[1], "42");
        assert_eq!(rows[0].fields[7], "sleep 100");
        assert!(filter_ps("USER COMMAND\nroot x\n", &[1]).is_err());
    }
}
