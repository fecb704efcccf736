//! Networking end to end: CNI bridge networks, published ports on 127.0.0.1, user
//! networks with name resolution, the none/host/container modes, DNS options, and
//! cleanup after a daemon crash. Every daemon has its own bridge names and addresses
//! (the harness's network slot); traffic stays on loopback and in the test's namespaces.

use std::io::{Read, Write};
use std::time::Duration;

use berth_integration_tests::{Daemon, Registry, fixtures, require_root, wait_until};

fn setup() -> (Registry, Daemon, String) {
    berth_integration_tests::daemon_with_image(fixtures::push_webserver, "web:latest")
}

/// A port nothing listens on right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// GET / on 127.0.0.1:port; the body, or None when nothing answers.
fn http_get(port: u16) -> Option<String> {
    let mut stream =
        std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream.write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    response.split_once("\r\n\r\n").map(|(_, body)| body.to_string())
}

fn assert_no_leftovers(daemon: &Daemon) {
    assert!(daemon.leftover_network().is_empty(), "left behind: {:#?}", daemon.leftover_network());
    assert!(daemon.leftover_mounts().is_empty(), "{:?}", daemon.leftover_mounts());
}

#[test]
fn published_ports_answer_on_loopback() {
    require_root!();
    let (_registry, daemon, image) = setup();
    let port = free_port();
    let publish = format!("127.0.0.1:{port}:80");
    daemon.berth(&["run", "-d", "--name", "web", "-p", &publish, &image]).success();
    wait_until("httpd to answer", Duration::from_secs(15), || http_get(port).is_some());
    assert_eq!(http_get(port).as_deref(), Some("hello from berth\n"));

    let out = daemon.berth(&["port", "web"]).success();
    assert_eq!(out.stdout, format!("80/tcp -> 127.0.0.1:{port}\n"));
    let ps = daemon.berth(&["ps"]).success().stdout;
    assert!(ps.contains(&format!("127.0.0.1:{port}->80/tcp")), "{ps}");
    // What the leak check looks for is really there while the container runs.
    let live = daemon.leftover_network();
    for kind in ["iptables -t nat", "iptables -t filter", "veth", "lease", "netns"] {
        assert!(live.iter().any(|l| l.starts_with(kind)), "no {kind} seen in {live:#?}");
    }

    let web = daemon.inspect("web");
    let endpoint = &web["NetworkSettings"]["Networks"]["bridge"];
    let subnet_prefix = daemon.net.default_subnet().rsplit_once('.').unwrap().0.to_string();
    let address = endpoint["IPAddress"].as_str().unwrap();
    assert!(address.starts_with(&format!("{subnet_prefix}.")), "{endpoint}");
    assert_eq!(endpoint["Gateway"], format!("{subnet_prefix}.1"));
    assert_eq!(endpoint["IPPrefixLen"], 24);
    assert_eq!(endpoint["MacAddress"].as_str().unwrap().len(), 17, "{endpoint}");
    assert!(web["NetworkSettings"]["SandboxKey"].as_str().unwrap().starts_with(&daemon.state.display().to_string()));
    // The container sees the same address on its eth0.
    let out = daemon.berth(&["exec", "web", "ip", "-4", "-o", "addr", "show", "eth0"]).success();
    assert!(out.stdout.contains(&format!("inet {address}/24")), "{}", out.stdout);

    // -P publishes the image's EXPOSEd port on a free host port.
    daemon.berth(&["run", "-d", "--name", "auto", "-P", &image]).success();
    let out = daemon.berth(&["port", "auto", "80"]).success();
    let (ip, random) = out.stdout.trim().rsplit_once(':').unwrap();
    assert_eq!(ip, "0.0.0.0");
    let random: u16 = random.parse().unwrap();
    wait_until("the -P port to answer", Duration::from_secs(15), || http_get(random).is_some());
    assert_eq!(http_get(random).as_deref(), Some("hello from berth\n"));

    // The same host port twice is refused, and the failed container is left without one.
    let out = daemon.berth(&["run", "-d", "--name", "clash", "-p", &publish, &image]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("port is already allocated"), "{}", out.stderr);

    daemon.berth(&["rm", "-f", "web", "auto", "clash"]).success();
    assert!(http_get(port).is_none(), "the port still answers after rm");
    assert_no_leftovers(&daemon);
}

#[test]
fn user_networks_resolve_containers_by_name() {
    require_root!();
    let (_registry, daemon, image) = setup();
    let id = daemon.berth(&["network", "create", "front"]).success().stdout.trim().to_string();
    assert_eq!(id.len(), 64, "{id}");
    let ls = daemon.berth(&["network", "ls"]).success().stdout;
    assert!(ls.starts_with("NETWORK ID"), "{ls}");
    for name in ["bridge", "host", "none", "front"] {
        assert!(ls.lines().any(|l| l.split_whitespace().nth(1) == Some(name)), "{name} missing from\n{ls}");
    }

    daemon.berth(&["run", "-d", "--name", "web", "--network", "front", "--network-alias", "www", &image]).success();
    wait_until("web to get an address", Duration::from_secs(10), || {
        daemon.inspect("web")["NetworkSettings"]["Networks"]["front"]["IPAddress"]
            .as_str()
            .is_some_and(|a| !a.is_empty())
    });
    for name in ["web", "www"] {
        let url = format!("http://{name}/");
        let out = daemon.berth(&["run", "--rm", "--network", "front", &image, "wget", "-qO-", &url]);
        assert_eq!((out.code, out.stdout.as_str()), (0, "hello from berth\n"), "{name}: {}", out.stderr);
    }
    // The default bridge has no name resolution between containers (as in Docker).
    let out = daemon.berth(&["run", "--rm", &image, "wget", "-q", "-T", "2", "-O-", "http://web/"]);
    assert_ne!(out.code, 0, "{}", out.stdout);

    let network: serde_json::Value =
        serde_json::from_str(&daemon.berth(&["network", "inspect", "front"]).success().stdout).unwrap();
    let containers = network[0]["Containers"].as_object().unwrap();
    assert_eq!(containers.len(), 1, "{network}");
    assert_eq!(containers.values().next().unwrap()["Name"], "web");
    let subnet = network[0]["IPAM"]["Config"][0]["Subnet"].as_str().unwrap().to_string();
    assert_ne!(subnet, daemon.net.default_subnet());

    let out = daemon.berth(&["network", "rm", "front"]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("active endpoints"), "{}", out.stderr);
    let out = daemon.berth(&["network", "create", "front"]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("already exists"), "{}", out.stderr);

    daemon.berth(&["rm", "-f", "web"]).success();
    daemon.berth(&["network", "rm", "front"]).success();
    let out = daemon.berth(&["network", "inspect", "front"]);
    assert_eq!(out.code, 1);
    assert_no_leftovers(&daemon);
}

#[test]
fn connect_and_disconnect_a_running_container() {
    require_root!();
    let (_registry, daemon, image) = setup();
    daemon.berth(&["network", "create", "extra"]).success();
    daemon.berth(&["run", "-d", "--name", "box", &image, "sleep", "1000"]).success();
    daemon.berth(&["run", "-d", "--name", "peer", "--network", "extra", &image]).success();
    daemon.berth(&["network", "connect", "--alias", "b0x", "extra", "box"]).success();
    let interfaces = daemon.berth(&["exec", "box", "ls", "/sys/class/net"]).success().stdout;
    assert_eq!(interfaces.split_whitespace().collect::<Vec<_>>(), ["eth0", "eth1", "lo"]);
    let settings = daemon.inspect("box")["NetworkSettings"]["Networks"].clone();
    assert!(settings["extra"]["IPAddress"].as_str().is_some_and(|a| !a.is_empty()), "{settings}");
    // The peer learns the newcomer's names.
    let hosts = daemon.berth(&["exec", "peer", "cat", "/etc/hosts"]).success().stdout;
    assert!(hosts.contains("box") && hosts.contains("b0x"), "{hosts}");
    let out = daemon.berth(&["exec", "box", "wget", "-qO-", "http://peer/"]).success();
    assert_eq!(out.stdout, "hello from berth\n");

    daemon.berth(&["network", "disconnect", "extra", "box"]).success();
    let interfaces = daemon.berth(&["exec", "box", "ls", "/sys/class/net"]).success().stdout;
    assert_eq!(interfaces.split_whitespace().collect::<Vec<_>>(), ["eth0", "lo"]);
    let hosts = daemon.berth(&["exec", "peer", "cat", "/etc/hosts"]).success().stdout;
    assert!(!hosts.contains("b0x"), "{hosts}");

    // Connected while stopped: both networks come up at the next start.
    daemon.berth(&["stop", "-t", "0", "box"]).success();
    daemon.berth(&["network", "connect", "extra", "box"]).success();
    daemon.berth(&["start", "box"]).success();
    let out = daemon.berth(&["exec", "box", "wget", "-qO-", "http://peer/"]).success();
    assert_eq!(out.stdout, "hello from berth\n");
    let settings = daemon.inspect("box")["NetworkSettings"]["Networks"].clone();
    assert!(settings["bridge"]["IPAddress"].as_str().is_some_and(|a| !a.is_empty()), "{settings}");
    assert!(settings["extra"]["IPAddress"].as_str().is_some_and(|a| !a.is_empty()), "{settings}");

    daemon.berth(&["rm", "-f", "box", "peer"]).success();
    let out = daemon.berth(&["network", "prune", "-f"]).success();
    assert!(out.stdout.contains("extra"), "{}", out.stdout);
    assert_no_leftovers(&daemon);
}

#[test]
fn none_host_and_container_modes() {
    require_root!();
    let (_registry, daemon, image) = setup();
    let out = daemon.berth(&[
        "run",
        "--rm",
        "--network",
        "none",
        &image,
        "sh",
        "-c",
        "ls /sys/class/net; ip -o link show lo",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[0], "lo", "{}", out.stdout);
    assert!(lines[1].contains("UP"), "loopback is down: {}", out.stdout);
    assert_eq!(lines.len(), 2, "{}", out.stdout);

    let mut host_interfaces: Vec<String> = std::fs::read_dir("/sys/class/net")
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    host_interfaces.sort();
    let out = daemon.berth(&["run", "--rm", "--network", "host", &image, "ls", "/sys/class/net"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let seen: Vec<String> = out.stdout.split_whitespace().map(str::to_string).collect();
    // Devices can come and go meanwhile (other tests); the host's main ones are there.
    for device in host_interfaces.iter().filter(|d| *d == "lo" || d.starts_with("eth")) {
        assert!(seen.contains(device), "{device} not seen from a host-network container: {seen:?}");
    }

    daemon.berth(&["run", "-d", "--name", "owner", &image, "sleep", "1000"]).success();
    let mac =
        daemon.inspect("owner")["NetworkSettings"]["Networks"]["bridge"]["MacAddress"].as_str().unwrap().to_string();
    let out =
        daemon.berth(&["run", "--rm", "--network", "container:owner", &image, "cat", "/sys/class/net/eth0/address"]);
    assert_eq!(out.stdout.trim(), mac, "{}", out.stderr);
    daemon.berth(&["stop", "-t", "0", "owner"]).success();
    let out = daemon.berth(&["run", "--rm", "--network", "container:owner", &image, "true"]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("non running container"), "{}", out.stderr);
    daemon.berth(&["rm", "owner"]).success();
    assert_no_leftovers(&daemon);
}

#[test]
fn dns_hosts_and_hostname_options() {
    require_root!();
    let (_registry, daemon, image) = setup();
    let out = daemon.berth(&[
        "run",
        "--rm",
        "--dns",
        "10.0.0.2",
        "--dns-search",
        "example.test",
        "--dns-option",
        "ndots:2",
        "--add-host",
        "db.local:10.1.2.3",
        "--hostname",
        "myhost",
        &image,
        "sh",
        "-c",
        "cat /etc/resolv.conf; echo ---; cat /etc/hosts; echo ---; hostname",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let parts: Vec<&str> = out.stdout.split("---\n").collect();
    assert_eq!(parts[0], "nameserver 10.0.0.2\nsearch example.test\noptions ndots:2\n");
    assert!(parts[1].contains("10.1.2.3\tdb.local\n"), "{}", parts[1]);
    // Its own address under its hostname.
    let subnet_prefix = daemon.net.default_subnet().rsplit_once('.').unwrap().0.to_string();
    assert!(
        parts[1].lines().any(|l| l.starts_with(&format!("{subnet_prefix}.")) && l.ends_with("\tmyhost")),
        "{}",
        parts[1]
    );
    assert_eq!(parts[2], "myhost\n");
    assert_no_leftovers(&daemon);
}

#[test]
fn networks_are_reclaimed_after_a_daemon_crash() {
    require_root!();
    let (_registry, mut daemon, image) = setup();
    let port = free_port();
    daemon.berth(&["run", "-d", "--name", "keep", "-p", &format!("127.0.0.1:{port}:80"), &image]).success();
    daemon.berth(&["run", "-d", "--name", "quitter", &image, "sleep", "2"]).success();
    wait_until("keep to serve", Duration::from_secs(15), || http_get(port).is_some());
    assert_eq!(daemon.leftover_network().iter().filter(|l| l.starts_with("lease")).count(), 2);

    daemon.kill9();
    // quitter exits while nobody watches.
    std::thread::sleep(Duration::from_secs(3));
    daemon.start_again();
    wait_until("quitter to be seen exited", Duration::from_secs(15), || {
        daemon.inspect("quitter")["State"]["Status"] == "exited"
    });
    wait_until("quitter's address to be released", Duration::from_secs(15), || {
        daemon.leftover_network().iter().filter(|l| l.starts_with("lease")).count() == 1
    });
    let quitter = daemon.inspect("quitter");
    assert_eq!(quitter["NetworkSettings"]["Networks"]["bridge"]["IPAddress"], "", "{}", quitter["NetworkSettings"]);
    assert_eq!(quitter["NetworkSettings"]["SandboxKey"], "");
    // keep's network survived the crash and the restart.
    assert_eq!(http_get(port).as_deref(), Some("hello from berth\n"));
    // Restarting a container gives it a working network again.
    daemon.berth(&["start", "quitter"]).success();
    daemon.berth(&["rm", "-f", "keep", "quitter"]).success();
    assert_no_leftovers(&daemon);

    // A stale namespace file and lease with no record (a crash between steps) go at start.
    std::fs::create_dir_all(daemon.state.join("netns")).unwrap();
    std::fs::write(daemon.state.join("netns/deadbeef"), "").unwrap();
    let leases = daemon.root.join("network/ipam").join(daemon.net.bridge());
    std::fs::create_dir_all(&leases).unwrap();
    let stale_ip = format!("{}.200", daemon.net.default_subnet().rsplit_once('.').unwrap().0);
    std::fs::write(leases.join(&stale_ip), "deadbeef\r\neth0").unwrap();
    daemon.restart();
    wait_until("stale state to be reclaimed", Duration::from_secs(15), || daemon.leftover_network().is_empty());
}
