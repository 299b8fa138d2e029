# NixOS VM tests, for CI with KVM and a binary cache (`nix flake check`). Each boots three
# replica VMs built by our modules from tests/inventories/good/vm-cluster.json, a client VM inside
# the client and orchestrator networks (192.168.1.20), and for the firewall test an outsider
# (192.168.1.30) inside neither.
{ pkgs, self }:
let
  inherit (pkgs) lib;
  inventoryFile = ../tests/inventories/good/vm-cluster.json;
  cluster = (import ./inventory.nix).fromFile inventoryFile;
  packages = self.packages.${pkgs.stdenv.hostPlatform.system};
  operatorSecret = "vm-test-operator-secret";

  withAddress = address: {
    networking.interfaces.eth1.ipv4.addresses = lib.mkForce [{ inherit address; prefixLength = 24; }];
  };

  replicaNode = hostName: { pkgs, ... }: {
    imports = [ self.nixosModules.replica-host (withAddress cluster.hosts.${hostName}.ip) ];
    services.tigerbeetle-host = { enable = true; inherit inventoryFile hostName; };
    # First deploy: the bootstrap unit exists, and the test starts it by hand.
    services.tigerbeetle-replica.bootstrap = true;
    # A test secret in the store; production uses agenix or sops-nix (docs/nixos.md).
    environment.etc."tb-agent/peer.token" = { text = "vm-test-peer-secret"; mode = "0400"; user = "tigerbeetle"; };
    environment.systemPackages = [ pkgs.curl pkgs.netcat ];
    # A replica at this cache grid holds about 2.4 GB resident (measured with 0.16.78), all of it
    # locked: the agent, the OS and headroom need the rest. QEMU touches guest pages lazily.
    virtualisation.memorySize = 4096;
    virtualisation.cores = 2;
    # The root disk (qemu-vm.nix: an ext4 image, 1024 MiB unless set) holds the data file, which
    # `tigerbeetle format` preallocates at about 1089 MiB (1 GiB of WAL, client replies, the
    # superblock), a backup (the agent first wants the data file's size plus a 1 GiB margin
    # free), and the agent's readiness wants 1 GiB free besides. scripts/check-nix
    # (tests/nix/check-vm-disks.py) redoes this arithmetic against a freshly formatted file.
    virtualisation.diskSize = 6144;
  };

  # vm-switch's replica: the same host, with a changed generation to activate as a deploy does
  # (the inventory with another cache grid: the replica's start reads it from
  # /etc/tigerbeetle/inventory.json, and the unit names the inventory's store path, so the unit
  # definition changes too).
  changedCacheGrid = "512MiB";
  inventory = builtins.fromJSON (builtins.readFile inventoryFile);
  changedInventory = builtins.toFile "vm-cluster-changed.json" (builtins.toJSON (lib.recursiveUpdate inventory {
    all.vars.tigerbeetle_cache_grid = changedCacheGrid;
  }));
  # `{ pkgs, ... }@args`: the module system passes pkgs only to a function that names it.
  switchNode = hostName: { pkgs, ... }@args: lib.recursiveUpdate (replicaNode hostName args) {
    specialisation.changed.configuration.services.tigerbeetle-host.inventoryFile = lib.mkForce changedInventory;
  };

  client = { pkgs, ... }: {
    imports = [ (withAddress "192.168.1.20") ];
    environment.systemPackages = [ packages.tigerbeetle packages.tbctl pkgs.curl pkgs.netcat ];
    environment.etc."tb/inventory.json".source = inventoryFile;
    environment.variables.TBCTL_TOKEN = operatorSecret;
  };

  outsider = { pkgs, ... }: {
    imports = [ (withAddress "192.168.1.30") ];
    environment.systemPackages = [ pkgs.curl pkgs.netcat ];
  };

  addresses = lib.concatStringsSep "," cluster.addresses;
  repl = command: "tigerbeetle repl --cluster=${cluster.cluster_id} --addresses=${addresses} --command='${command}'";

  # Boot, then the explicit first-deploy bootstrap, then wait until every agent is ready.
  bootstrapScript = ''
    replicas = [replica0, replica1, replica2]
    start_all()
    for r in replicas:
        r.wait_for_unit("tb-agent.service")
        # Without a data file the replica does not start, and nothing formats one. Waiting for
        # bootstrap is not a failure (switch-to-configuration would exit 4): the start script's
        # status 78 is a success, the unit ends inactive, and the agent's readiness says why.
        r.wait_until_succeeds("journalctl -u tigerbeetle-replica.service | grep -q 'tbctl recover'")
        r.wait_until_succeeds("test $(systemctl show --property=ActiveState --value tigerbeetle-replica.service) = inactive")
        r.fail("systemctl is-failed --quiet tigerbeetle-replica.service")
        r.wait_until_succeeds("curl -s -H 'Authorization: Bearer ${operatorSecret}' http://" + r.name.replace("replica", "192.168.1.1") + ":7000/v1/health/ready | grep -q 'does not exist'")
        r.fail("test -e ${cluster.data_dir}/*.tigerbeetle")
        r.succeed("systemctl start tigerbeetle-replica-bootstrap.service")
        # A second bootstrap refuses: the file exists.
        r.fail("systemctl start tigerbeetle-replica-bootstrap.service")
        r.succeed("systemctl start tigerbeetle-replica.service")
    client.wait_for_unit("multi-user.target")
    client.succeed("tbctl wait-ready --inventory /etc/tb/inventory.json --timeout-ms 300000")
    # The clock metrics come from adjtimex (read-only) under the agent's real unit: a syscall
    # filter or ProtectClock that denies @clock would drop them and silence the clock alert.
    for r in replicas:
        r.succeed("curl -sf -H 'Authorization: Bearer ${operatorSecret}' http://" + r.name.replace("replica", "192.168.1.1") + ":7000/metrics | grep -q '^node_timex_sync_status '")
  '';

  mkTestWith = replica: name: extraNodes: testScript: pkgs.testers.runNixOSTest {
    name = "tigerbeetle-${name}";
    nodes = {
      replica0 = replica "replica0";
      replica1 = replica "replica1";
      replica2 = replica "replica2";
      inherit client;
    } // extraNodes;
    testScript = bootstrapScript + testScript;
  };
  mkTest = mkTestWith replicaNode;
in
{
  # (1) Three replicas form a cluster, every agent is ready, a client creates and looks up
  # accounts, and a backup through the agent lands in the backup directory.
  vm-cluster = mkTest "cluster" { } ''
    for r in replicas:
        r.succeed("curl -sf -H 'Authorization: Bearer ${operatorSecret}' http://" + r.name.replace("replica", "192.168.1.1") + ":7000/v1/health/ready")
    client.succeed("${repl "create_accounts id=1 code=10 ledger=700, id=2 code=10 ledger=700"}")
    out = client.succeed("${repl "lookup_accounts id=1, id=2"}")
    assert '"id": "1"' in out and '"id": "2"' in out, out
    # A backup through the agent lands in the module's backup directory (0700, the agent's user).
    client.succeed("tbctl backup --inventory /etc/tb/inventory.json --replica 1")
    replica1.succeed("test \"$(stat -c '%a %U' /var/lib/tb-backups)\" = '700 tigerbeetle'")
    replica1.succeed("test -n \"$(ls -A /var/lib/tb-backups)\"")
    client.succeed("tbctl wait-ready --inventory /etc/tb/inventory.json --timeout-ms 300000")
  '';

  # (2) Inside the client networks the replica port answers; outside it does not, nor the agent's.
  vm-firewall = mkTest "firewall" { inherit outsider; } ''
    outsider.wait_for_unit("multi-user.target")
    for r in replicas:
        ip = r.name.replace("replica", "192.168.1.1")
        client.succeed(f"nc -z -w 5 {ip} 3000")
        client.succeed(f"nc -z -w 5 {ip} 7000")
        outsider.fail(f"nc -z -w 5 {ip} 3000")
        outsider.fail(f"nc -z -w 5 {ip} 7000")
    # The peers reach each other's replica and agent ports.
    replica0.succeed("nc -z -w 5 192.168.1.11 3000 && nc -z -w 5 192.168.1.11 7000")
  '';

  # (3) Memory is locked: unlimited RLIMIT_MEMLOCK, VmLck close to VmRSS, no warning.
  vm-memlock = mkTest "memlock" { } ''
    for r in replicas:
        pid = r.succeed("systemctl show --property=MainPID --value tigerbeetle-replica.service").strip()
        r.succeed(f"grep -E '^Max locked memory +unlimited +unlimited' /proc/{pid}/limits")
        r.succeed(f"awk '/^VmLck/ {{l=$2}} /^VmRSS/ {{r=$2}} END {{exit !(l >= 0.9 * r)}}' /proc/{pid}/status")
        r.fail("journalctl -u tigerbeetle-replica.service | grep -q 'Unable to lock pages'")
  '';

  # (4) A deleted data file is not re-formatted; recover through the agent brings the replica back.
  vm-recover = mkTest "recover" { } ''
    client.succeed("${repl "create_accounts id=7 code=10 ledger=700"}")
    data_file = "${cluster.hosts.replica2.data_file}"
    replica2.succeed("systemctl stop tigerbeetle-replica.service")
    replica2.succeed(f"rm {data_file}")
    # Type=exec: the start request succeeds once the start script runs; the script then refuses
    # with status 78, a success status: the unit ends inactive, not failed.
    replica2.succeed("systemctl start tigerbeetle-replica.service")
    replica2.wait_until_succeeds("journalctl -u tigerbeetle-replica.service | grep -q 'tbctl recover'")
    replica2.wait_until_succeeds("test $(systemctl show --property=ActiveState --value tigerbeetle-replica.service) = inactive")
    replica2.fail("systemctl is-failed --quiet tigerbeetle-replica.service")
    # Not restarted (exit status 78 is a success, and exempt from Restart=), and nothing formatted.
    replica2.succeed("test $(systemctl show --property=NRestarts --value tigerbeetle-replica.service) = 0")
    replica2.fail(f"test -e {data_file}")
    client.succeed("tbctl recover --inventory /etc/tb/inventory.json --replica 2")
    replica2.succeed(f"test -e {data_file}")
    replica2.succeed("systemctl is-active tigerbeetle-replica.service")
    client.succeed("tbctl wait-ready --inventory /etc/tb/inventory.json --timeout-ms 300000")
    out = client.succeed("${repl "lookup_accounts id=7"}")
    assert '"id": "7"' in out, out
  '';

  # (6) What `switch` does to a running replica: nothing. Each host in turn activates its changed
  # generation (switch-to-configuration, as nixos-rebuild switch and ansible/playbooks/rollout.yml do): it
  # exits 0, the replica keeps its process, and its new definition is loaded; the restart goes
  # through the agent (quorum guarded) and brings the new flags. A replica that crashes before
  # its host's turn restarts on its own, unchanged unit.
  vm-switch = mkTestWith switchNode "switch" { } ''
    client.succeed("${repl "create_accounts id=11 code=10 ledger=700"}")
    main_pid = "systemctl show --property=MainPID --value tigerbeetle-replica.service"
    new_flag = "--cache-grid=${changedCacheGrid}"
    agent_urls = ${builtins.toJSON cluster.agent_urls}
    old_flag = "--cache-grid=${cluster.cache_grid}"
    def runs_flag(r, pid, flag):
        return r.execute(f"tr '\\0' '\\n' < /proc/{pid}/cmdline | grep -qx -- {flag}")[0] == 0
    for index, r in enumerate(replicas):
        if index == 1:
            # replica2's turn has not come: killed, systemd starts it again on its active unit.
            old_pid = replica2.succeed(main_pid).strip()
            replica2.succeed("systemctl kill --signal=SIGKILL tigerbeetle-replica.service")
            # Until the new process is tigerbeetle itself (before, it is the start script).
            replica2.wait_until_succeeds(f"pid=$({main_pid}); test $pid != {old_pid} && test $pid != 0 && tr '\\0' '\\n' < /proc/$pid/cmdline | grep -q -- '^--addresses='")
            assert runs_flag(replica2, replica2.succeed(main_pid).strip(), old_flag)
            client.succeed("tbctl wait-ready --inventory /etc/tb/inventory.json --timeout-ms 300000")
        pid = r.succeed(main_pid).strip()
        # ansible/playbooks/tasks/apply_nixos.yml's decision, before the switch: the unit the new system
        # carries differs from the active one (both resolved through /etc/static to the store).
        fragment = "readlink --canonicalize \"$(systemctl show --property=FragmentPath --value tigerbeetle-replica.service)\""
        built = r.succeed("readlink --canonicalize /run/current-system/specialisation/changed/etc/systemd/system/tigerbeetle-replica.service").strip()
        assert r.succeed(fragment).strip() != built
        r.succeed("/run/current-system/specialisation/changed/bin/switch-to-configuration test")
        assert r.succeed(fragment).strip() == built, "the active unit is not the new system's"
        assert r.succeed(main_pid).strip() == pid, "switch restarted the replica"
        assert runs_flag(r, pid, old_flag)
        r.succeed("grep -q '\"tigerbeetle_cache_grid\":\"${changedCacheGrid}\"' /etc/tigerbeetle/inventory.json")
        # The changed inventory restarted the agent (its restartTriggers): wait until it answers.
        client.wait_until_succeeds(f"curl --silent --output /dev/null {agent_urls[index]}/v1/status")
        client.succeed(f"tbctl restart --inventory /etc/tb/inventory.json --replica {index}")
        assert runs_flag(r, r.succeed(main_pid).strip(), new_flag)
        client.succeed("tbctl wait-ready --inventory /etc/tb/inventory.json --timeout-ms 300000")
    out = client.succeed("${repl "lookup_accounts id=11"}")
    assert '"id": "11"' in out, out
  '';

  # (5) The agent refuses requests without a valid token.
  vm-auth = mkTest "auth" { } ''
    url = "http://192.168.1.10:7000"
    client.succeed(f"curl -s -o /dev/null -w '%{{http_code}}' {url}/v1/status | grep -qx 401")
    client.succeed(f"curl -s -o /dev/null -w '%{{http_code}}' -H 'Authorization: Bearer wrong' {url}/v1/status | grep -qx 401")
    client.succeed(f"curl -s -o /dev/null -w '%{{http_code}}' -X POST {url}/v1/replica/stop | grep -qx 401")
    client.succeed(f"curl -sf -H 'Authorization: Bearer ${operatorSecret}' {url}/v1/status")
    replica0.succeed("systemctl is-active tigerbeetle-replica.service")
  '';
}
