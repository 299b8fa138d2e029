# Evaluates nixos-modules/ with lib.evalModules against nixpkgs' own modules (transcribed under
# nixpkgs/) and stubs of the rest (eval-host.nix) and checks what they generate. Run by
# scripts/check-nix:
#
#   nix-instantiate --eval --strict --json tests/nix/module-tests.nix --arg nixpkgsLib ../shared/nixpkgs-lib/lib
#
# Output: { results = [ { name; ok; detail; } ... ];
#           agentSettings = { "<inventory>/<host>" = { inventory; host; settings = <settings TOML as JSON>; }; };
#           replicaUnits = { "<inventory>/<host>" = { dataFile; inventory; serviceConfig; }; };
#           rendered = { "<inventory>/<host>" = { units = { "<name>.service" = <unit file>; }; ruleset;
#                        polkitRules; acceptRules = [ ... ]; }; }; }
# The script fails on any result that is not ok, runs `tb-agent check-config --inventory
# --host --settings` on every host's settings file, runs every replica unit's start commands without its data file
# (tests/nix/check-missing-data-file.py), and runs the rendered units, ruleset, polkit rules and
# scripts through systemd-analyze, nft, node and bash (tests/nix/check-rendered.py).
{ nixpkgsLib }:
let
  lib = import nixpkgsLib;
  b = builtins;
  inventory = import ../../nix/inventory.nix;
  inherit (import ./eval-host.nix { inherit lib; }) pkgs evalConfig failedAssertions unitText ruleset;

  result = name: ok: detail: { inherit name ok; detail = if ok then "" else detail; };

  asList = v: if b.isList v then v else if v == null then [ ] else [ v ];

  # A command line, followed by the text of every store file it names: what the unit runs.
  commandText = command:
    let
      words = b.filter (w: b.isString w && w != "") (b.split "[ '\"]" command);
      files = b.filter (w: lib.hasPrefix "/nix/store/" w && b.pathExists w) words;
    in
    lib.concatStringsSep "\n" ([ command ] ++ map b.readFile files);

  # Everything that runs when a unit starts.
  startPath = unit:
    lib.concatStringsSep "\n" ([ unit.preStart unit.script unit.postStart ]
      ++ map commandText (b.concatMap (key: asList (unit.serviceConfig.${key} or null))
      [ "ExecStartPre" "ExecStart" "ExecStartPost" ]));

  unitsList = b.fromJSON (b.readFile ../../ansible/roles/tigerbeetle/files/units.json);
  # The directives of units.json that a unit lacks, or sets to another value.
  missingDirectives = name: unit:
    map (d: d.key) (b.filter (d: (unit.serviceConfig.${d.key} or null) != d.value) unitsList.${name});

  hasFormat = text: b.match ".*tigerbeetle[^\n]* format .*" text != null;

  acceptLines = config:
    b.filter (line: lib.hasInfix "accept" line)
      (lib.splitString "\n" config.networking.firewall.extraInputRules);

  expectedAcceptLines = sources: port:
    lib.optional (sources != [ ])
      "ip saddr { ${lib.concatStringsSep ", " sources} } tcp dport ${toString port} accept";

  # --- every host of every good inventory --------------------------------------------------------

  goodInventories =
    { "inventories/example.json" = ../../inventories/example.json; }
    // lib.mapAttrs' (file: _: lib.nameValuePair "tests/inventories/good/${file}" (../inventories/good + "/${file}"))
      (lib.filterAttrs (file: kind: kind == "regular" && lib.hasSuffix ".json" file && !(b.elem file tbctlOnly)) (b.readDir ../inventories/good));
  # Valid inventories that a NixOS host refuses (tested below as broken inputs).
  tbctlOnly = [ "no-tokens.json" ];

  hostResults = inventoryName: inventoryFile: hostName:
    let
      cluster = inventory.fromFile inventoryFile;
      host = cluster.hosts.${hostName};
      config = evalConfig [
        {
          services.tigerbeetle-host = { inherit inventoryFile hostName; };
          services.tigerbeetle-replica.allowClusterIdZero = cluster.cluster_id == "0";
        }
      ];
      replica = config.systemd.services.tigerbeetle-replica;
      agent = config.systemd.services.tb-agent;
      at = "${inventoryName} ${hostName}: ";
      failed = failedAssertions config;
      expectedFirewall =
        expectedAcceptLines (host.peer_ips ++ cluster.client_networks) host.port
        ++ expectedAcceptLines (host.peer_ips ++ cluster.orchestrator_networks) host.agent_port;
    in
    [
      (result "${at}assertions pass" (failed == [ ]) (lib.concatStringsSep "; " failed))
      (result "${at}replica unit has CAP_IPC_LOCK"
        (b.elem "CAP_IPC_LOCK" (asList (replica.serviceConfig.AmbientCapabilities or null))
          && b.elem "CAP_IPC_LOCK" (asList (replica.serviceConfig.CapabilityBoundingSet or null)))
        (b.toJSON (replica.serviceConfig.AmbientCapabilities or null)))
      (result "${at}replica unit has LimitMEMLOCK=infinity" ((replica.serviceConfig.LimitMEMLOCK or null) == "infinity") (toString (replica.serviceConfig.LimitMEMLOCK or null)))
      (result "${at}replica unit restarts on failure at a bounded rate"
        ((replica.serviceConfig.Restart or null) == "on-failure" && replica.startLimitBurst != null && replica.startLimitIntervalSec != null)
        (b.toJSON { inherit (replica) startLimitBurst startLimitIntervalSec; Restart = (replica.serviceConfig.Restart or null); }))
      # A parallel deployer must not restart every replica at once (issue 13, item 4).
      (result "${at}switch does not restart the replica (restartIfChanged = false)" (!replica.restartIfChanged) "restartIfChanged is true")
      (result "${at}replica unit runs as its dedicated user" ((replica.serviceConfig.User or null) == "tigerbeetle" && config.users.users.tigerbeetle.isSystemUser) (replica.serviceConfig.User or null))
      # The one list (ansible/roles/tigerbeetle/files/units.json, which the Ansible role renders
      # too), read here without nix/units.nix: every directive reaches the unit as listed.
      (result "${at}replica and agent units carry every directive of units.json"
        (missingDirectives "replica_service" replica ++ missingDirectives "replica" replica ++ missingDirectives "agent" agent == [ ])
        (b.toJSON { replica = missingDirectives "replica_service" replica ++ missingDirectives "replica" replica; agent = missingDirectives "agent" agent; }))
      (result "${at}replica start path never formats" (!hasFormat (startPath replica)) (startPath replica))
      (result "${at}agent start path never formats" (!hasFormat (startPath agent)) (startPath agent))
      # The command line, the data file and the start guard are tb_proto's (tb-agent
      # replica-start reads the inventory the host holds): the unit only names them.
      (result "${at}replica starts through tb-agent replica-start with the host's inventory"
        ((replica.serviceConfig.ExecStart or null) == "${pkgs.tb-agent}/bin/tb-agent replica-start --inventory /etc/tigerbeetle/inventory.json --host ${hostName} --binary ${pkgs.tigerbeetle}/bin/tigerbeetle")
        (replica.serviceConfig.ExecStart or ""))
      (result "${at}the inventory placed at /etc/tigerbeetle/inventory.json, 0644, a copy of the file the host is built from"
        (config.environment.etc."tigerbeetle/inventory.json".source == inventoryFile
          && config.environment.etc."tigerbeetle/inventory.json".mode == "0644")
        (b.toJSON { inherit (config.environment.etc."tigerbeetle/inventory.json") mode; source = toString config.environment.etc."tigerbeetle/inventory.json".source; }))
      # replica-start reads the inventory by its fixed path: without the trigger, a changed
      # inventory leaves the unit file as it was and the rollout would not restart the replica.
      (result "${at}a changed inventory changes the replica's unit (restartTriggers) and restarts the agent"
        (replica.restartTriggers == [ inventoryFile ] && b.elem inventoryFile agent.restartTriggers
          && b.elem config.services.tb-agent.settingsFile agent.restartTriggers)
        (b.toJSON { replica = map toString replica.restartTriggers; agent = map toString agent.restartTriggers; }))
      (result "${at}a missing data file (78) is a success that is not restarted; another user's (77) and a usage error (64) are failures not restarted"
        ((replica.serviceConfig.RestartPreventExitStatus or null) == [ 78 77 64 ]
          && (replica.serviceConfig.SuccessExitStatus or null) == 78)
        (b.toJSON { inherit (replica.serviceConfig) RestartPreventExitStatus SuccessExitStatus; }))
      (result "${at}no bootstrap unit unless asked" (!(config.systemd.services ? tigerbeetle-replica-bootstrap)) "bootstrap unit present")
      (result "${at}firewall opens exactly the peer, client and orchestrator sources"
        (lib.sort lib.lessThan (acceptLines config) == lib.sort lib.lessThan expectedFirewall)
        "got ${b.toJSON (acceptLines config)}, expected ${b.toJSON expectedFirewall}")
      (result "${at}no port is opened to everyone"
        (config.networking.firewall.allowedTCPPorts == [ ] && config.networking.firewall.allowedUDPPorts == [ ] && config.networking.nftables.enable)
        (b.toJSON config.networking.firewall.allowedTCPPorts))
      (result "${at}agent may manage only the replica unit"
        (lib.hasInfix ''action.lookup("unit") == "tigerbeetle-replica.service"'' config.security.polkit.extraConfig
          && lib.hasInfix ''subject.user == "tigerbeetle"'' config.security.polkit.extraConfig
          && config.security.polkit.enable)
        config.security.polkit.extraConfig)
      # The agent accepts StatsD datagrams only from the replica's own sockets, read from
      # /proc/<replica pid>/fd. Without CAP_SYS_PTRACE the kernel allows that only to the same
      # user holding every capability the replica holds (the Debian role's unit is the same).
      (result "${at}agent may read the replica's /proc/PID/fd: same user, a superset of its capabilities"
        ((agent.serviceConfig.User or null) == (replica.serviceConfig.User or null)
          && b.all (cap: b.elem cap (asList (agent.serviceConfig.AmbientCapabilities or null)))
          (asList (replica.serviceConfig.AmbientCapabilities or null)))
        (b.toJSON { agent = agent.serviceConfig.AmbientCapabilities or null; replica = replica.serviceConfig.AmbientCapabilities or null; }))
      # adjtimex (read-only without CAP_SYS_TIME) feeds node_timex_*; ProtectClock would deny it
      # and silence the clock alert.
      (result "${at}agent: the replica's capability only, a system-service syscall filter plus adjtimex, no ProtectClock, the journal for itself"
        ((agent.serviceConfig.CapabilityBoundingSet or null) == [ "CAP_IPC_LOCK" ]
          && (agent.serviceConfig.SystemCallFilter or null) == [ "@system-service" "adjtimex" ]
          && !(agent.serviceConfig ? ProtectClock)
          && (agent.serviceConfig.SupplementaryGroups or null) == [ "systemd-journal" ]
          && !(b.elem "systemd-journal" config.users.users.tigerbeetle.extraGroups))
        (b.toJSON { inherit (agent.serviceConfig) CapabilityBoundingSet SystemCallFilter SupplementaryGroups; ProtectClock = agent.serviceConfig.ProtectClock or null; }))
      (result "${at}agent serves the inventory with its settings file, checked first"
        (
          let args = "--inventory /etc/tigerbeetle/inventory.json --host ${hostName} --settings /etc/tb-agent/settings.toml"; in
          (agent.serviceConfig.ExecStart or "") == "${pkgs.tb-agent}/bin/tb-agent serve ${args}"
          && (agent.serviceConfig.ExecStartPre or null) == [ "${pkgs.tb-agent}/bin/tb-agent check-config ${args}" ]
          && config.environment.etc."tb-agent/settings.toml".source == config.services.tb-agent.settingsFile
          && config.services.tb-agent.settingsFile.value == config.services.tb-agent.settings
        )
        (b.toJSON { inherit (agent.serviceConfig) ExecStartPre ExecStart; }))
      # Only the host's own sections: everything cluster-wide is rendered from the inventory by
      # tb_proto, the one generator.
      (result "${at}agent settings: systemd mode on the replica unit, the audit log, JSON logs, backups; nothing cluster-wide"
        (
          let s = config.services.tb-agent.settings; in
          s.run == { mode = "systemd"; unit = "tigerbeetle-replica.service"; binary = "${pkgs.tigerbeetle}/bin/tigerbeetle"; }
          && s.audit_log == "/var/log/tb-agent/audit.jsonl"
          && s.log == { format = "json"; }
          && b.attrNames s == [ "audit_log" "backup" "log" "run" ]
        )
        (b.toJSON config.services.tb-agent.settings))
      (result "${at}backup directory: in the agent's settings, created 0700 for it, writable in its sandbox"
        (config.services.tb-agent.settings.backup.dir == "/var/lib/tb-backups"
          && b.elem "d /var/lib/tb-backups 0700 tigerbeetle tigerbeetle - -" config.systemd.tmpfiles.rules
          && b.elem "/var/lib/tb-backups" agent.serviceConfig.ReadWritePaths)
        (b.toJSON { inherit (config.systemd) tmpfiles; inherit (agent.serviceConfig) ReadWritePaths; }))
      (result "${at}host sysctls" (config.boot.kernel.sysctl."kernel.io_uring_disabled" == 0 && config.boot.kernel.sysctl."net.core.rmem_max" >= 4194304) (b.toJSON config.boot.kernel.sysctl))
      (result "${at}time sync on, no swap warning" (config.services.timesyncd.enable && config.warnings == [ ]) (b.toJSON config.warnings))
    ];

  goodHosts = lib.concatLists (lib.mapAttrsToList
    (name: file: lib.concatMap (hostResults name file) (b.attrNames (inventory.fromFile file).hosts))
    goodInventories);

  # Each host's settings file with the inventory and host it is read with, for `tb-agent
  # check-config --inventory --host --settings` (scripts/check-nix).
  agentSettings = lib.listToAttrs
    (lib.concatLists (lib.mapAttrsToList
      (name: file: map
        (hostName: lib.nameValuePair "${name}/${hostName}" {
          inventory = toString file;
          host = hostName;
          settings = (evalConfig [{
            services.tigerbeetle-host = { inventoryFile = file; inherit hostName; };
            services.tigerbeetle-replica.allowClusterIdZero = true;
          }]).services.tb-agent.settings;
        })
        (b.attrNames (inventory.fromFile file).hosts))
      goodInventories)) // {
    # The backup schedule as the options write it (the agent's keys, checked by check-config).
    "inventories/example.json/tb-0 with a backup schedule" = {
      inventory = toString ../../inventories/example.json;
      host = "tb-0";
      settings = scheduled.services.tb-agent.settings;
    };
  };

  # The replica units, for tests/nix/check-missing-data-file.py: their start commands are store
  # files here (fake-pkgs' writeShellScript), so the check can run them.
  replicaUnits = lib.listToAttrs (lib.concatLists (lib.mapAttrsToList
    (name: file: map
      (hostName:
        let
          config = evalConfig [{
            services.tigerbeetle-host = { inventoryFile = file; inherit hostName; };
            services.tigerbeetle-replica.allowClusterIdZero = true;
          }];
        in
        lib.nameValuePair "${name}/${hostName}" {
          inherit (config.services.tigerbeetle-replica) dataFile;
          inventory = toString file;
          serviceConfig = lib.filterAttrs (_: v: v != null)
            (lib.genAttrs [ "Type" "ExecCondition" "ExecStartPre" "ExecStart" "Restart" "SuccessExitStatus" "RestartPreventExitStatus" ]
              (key: config.systemd.services.tigerbeetle-replica.serviceConfig.${key} or null));
        })
      (b.attrNames (inventory.fromFile file).hosts))
    goodInventories));

  # --- the example's tb-0, spelt out (independent of the modules' own derivations) ----------------

  example = evalConfig [{ services.tigerbeetle-host = { inventoryFile = ../../inventories/example.json; hostName = "tb-0"; }; }];
  extraFlagsExample = evalConfig [{
    services.tigerbeetle-host = { inventoryFile = ../../inventories/example.json; hostName = "tb-0"; };
    services.tigerbeetle-replica.extraFlags = [ "--log-debug" "a b%" ];
  }];
  scheduled = evalConfig [{
    services.tigerbeetle-host = { inventoryFile = ../../inventories/example.json; hostName = "tb-0"; };
    services.tb-agent.backup = { schedule = "30 2 * * *"; scheduleRandomizedDelaySec = 900; };
  }];
  exampleResults = [
    (result "example tb-0: firewall rules, literally"
      (lib.sort lib.lessThan (acceptLines example) == [
        "ip saddr { 10.0.0.11, 10.0.0.12, 10.0.1.0/24 } tcp dport 3000 accept"
        "ip saddr { 10.0.0.11, 10.0.0.12, 10.0.2.0/24 } tcp dport 7443 accept"
      ])
      (b.toJSON (acceptLines example)))
    (result "example tb-0: the replica's command, literally"
      (example.systemd.services.tigerbeetle-replica.serviceConfig.ExecStart
        == "/nix/store/00000000000000000000000000000000-tb-agent-0.1.0/bin/tb-agent replica-start --inventory /etc/tigerbeetle/inventory.json --host tb-0 --binary /nix/store/00000000000000000000000000000000-tigerbeetle-0.16.78/bin/tigerbeetle")
      example.systemd.services.tigerbeetle-replica.serviceConfig.ExecStart)
    (result "example tb-0: extraFlags follow --, quoted for systemd"
      (extraFlagsExample.systemd.services.tigerbeetle-replica.serviceConfig.ExecStart
        == "/nix/store/00000000000000000000000000000000-tb-agent-0.1.0/bin/tb-agent replica-start --inventory /etc/tigerbeetle/inventory.json --host tb-0 --binary /nix/store/00000000000000000000000000000000-tigerbeetle-0.16.78/bin/tigerbeetle -- --log-debug \"a b%%\"")
      extraFlagsExample.systemd.services.tigerbeetle-replica.serviceConfig.ExecStart)
    (result "example tb-0: the data file is the inventory's"
      (example.services.tigerbeetle-replica.dataFile == "/var/lib/tigerbeetle/155384968277351797236104484427093106345_0.tigerbeetle")
      example.services.tigerbeetle-replica.dataFile)
  ];

  # --- bootstrap, swap, and nixpkgs' services.tigerbeetle beside ours ---------------------------

  withExample = modules: evalConfig ([{ services.tigerbeetle-host = { inventoryFile = ../../inventories/example.json; hostName = "tb-1"; }; }] ++ modules);
  bootstrapped = withExample [{ services.tigerbeetle-replica.bootstrap = true; }];
  bootstrapUnit = bootstrapped.systemd.services.tigerbeetle-replica-bootstrap;
  withSwap = withExample [{ swapDevices = [{ device = "/dev/sda2"; }]; }];
  withNixpkgsModule = enable: withExample [
    ./nixpkgs-tigerbeetle-standin.nix
    { services.tigerbeetle.enable = enable; }
  ];
  otherResults = [
    (result "bootstrap: a one-shot unit formats, refusing an existing file"
      ((bootstrapUnit.serviceConfig.Type or null) == "oneshot"
        && hasFormat (startPath bootstrapUnit)
        && lib.hasInfix "refusing to format" (startPath bootstrapUnit)
        && lib.hasInfix "--cluster=155384968277351797236104484427093106345 --replica=1 --replica-count=3" (startPath bootstrapUnit))
      (startPath bootstrapUnit))
    (result "bootstrap: started only by hand" (bootstrapUnit.wantedBy == [ ] && bootstrapUnit.requiredBy == [ ] && !(b.elem "tigerbeetle-replica-bootstrap.service" (bootstrapped.systemd.services.tigerbeetle-replica.wants ++ bootstrapped.systemd.services.tigerbeetle-replica.requires))) (b.toJSON bootstrapUnit.wantedBy))
    (result "bootstrap: the replica's own start path still never formats" (!hasFormat (startPath bootstrapped.systemd.services.tigerbeetle-replica)) "")
    (result "bootstrap: a warning says to turn it off" (b.any (lib.hasInfix "bootstrap is on") bootstrapped.warnings) (b.toJSON bootstrapped.warnings))
    (
      let c = withExample [{ services.tb-agent.backupDir = null; }]; in
      result "backupDir = null: no backups, no directory"
        (!(c.services.tb-agent.settings ? backup) && c.systemd.tmpfiles.rules == [ "d /var/lib/tigerbeetle 0700 tigerbeetle tigerbeetle - -" ]
          && c.systemd.services.tb-agent.serviceConfig.ReadWritePaths == [ "/var/lib/tigerbeetle" ])
        (b.toJSON c.systemd.tmpfiles.rules)
    )
    (
      let c = withExample [{ services.tb-agent = { backupDir = "/srv/backups"; settings.backup.keep_last = 3; }; }]; in
      result "backupDir and settings.backup: one [backup] section, the directory created"
        (c.services.tb-agent.settings.backup == { dir = "/srv/backups"; keep_last = 3; }
          && b.elem "d /srv/backups 0700 tigerbeetle tigerbeetle - -" c.systemd.tmpfiles.rules
          && b.elem "/srv/backups" c.systemd.services.tb-agent.serviceConfig.ReadWritePaths)
        (b.toJSON c.services.tb-agent.settings.backup)
    )
    (result "backup.schedule: written as [backup] schedule and schedule_randomized_delay_s"
      (scheduled.services.tb-agent.settings.backup == { dir = "/var/lib/tb-backups"; schedule = "30 2 * * *"; schedule_randomized_delay_s = 900; })
      (b.toJSON scheduled.services.tb-agent.settings.backup))
    (result "backup.schedule empty (the default): no schedule keys, no backups taken by the agent itself"
      (example.services.tb-agent.settings.backup == { dir = "/var/lib/tb-backups"; })
      (b.toJSON example.services.tb-agent.settings.backup))
    # The rollout restarts a replica whose built unit file differs from the active one; the
    # command line names the fixed /etc path, so only the trigger makes a changed inventory
    # show (nix/vm-tests.nix's vm-switch does this on real NixOS).
    (
      let
        exampleJson = b.fromJSON (b.readFile ../../inventories/example.json);
        regridded = b.toFile "example-regridded.json" (b.toJSON (lib.recursiveUpdate exampleJson { all.vars.tigerbeetle_cache_grid = "512MiB"; }));
        changed = evalConfig [ base { services.tigerbeetle-host.inventoryFile = lib.mkForce regridded; } ];
      in
      result "another cache grid in the inventory: the same command line, another replica unit file"
        (changed.systemd.services.tigerbeetle-replica.serviceConfig.ExecStart == example.systemd.services.tigerbeetle-replica.serviceConfig.ExecStart
          && unitText changed "tigerbeetle-replica" != unitText example "tigerbeetle-replica"
          && failedAssertions changed == [ ])
        (unitText changed "tigerbeetle-replica")
    )
    (result "swap on: a warning" (b.any (lib.hasInfix "swap is on") withSwap.warnings) (b.toJSON withSwap.warnings))
    (result "nixpkgs' services.tigerbeetle imported beside ours: evaluates, no shared names"
      (let c = withNixpkgsModule false; in b.deepSeq (map (unitText c) (b.attrNames c.systemd.services)) (failedAssertions c == [ ] && !(c.systemd.services ? tigerbeetle)))
      "")
    (result "nixpkgs' services.tigerbeetle enabled beside ours: both units, distinct"
      (let c = withNixpkgsModule true; in b.deepSeq (map (unitText c) (b.attrNames c.systemd.services)) (c.systemd.services ? tigerbeetle && c.systemd.services ? tigerbeetle-replica))
      "")
  ];

  # --- broken inputs: each trips its assertion, with its message ---------------------------------

  # A valid host (the example's tb-0) that each case breaks; the inventory's own rules (addresses,
  # cluster id, tokens, secrets in the store...) are nix/inventory.nix's, tested with the bad
  # inventories by scripts/check-nix.
  base = { services.tigerbeetle-host = { inventoryFile = ../../inventories/example.json; hostName = "tb-0"; }; };
  broken = name: override: expected:
    let
      failed = failedAssertions (evalConfig [ base override ]);
    in
    result "broken input ${name}: \"${expected}\""
      (b.any (lib.hasInfix expected) failed)
      "failed assertions: ${b.toJSON failed}";
  force = lib.mkForce;
  # Whether evaluating `value` fails (a type error of an option, say).
  refused = value: !(b.tryEval (b.deepSeq value value)).success;
  brokenResults = [
    (result "broken inputs: the base they break is valid" (failedAssertions (evalConfig [ base ]) == [ ]) (b.toJSON (failedAssertions (evalConfig [ base ]))))
    (
      let failed = failedAssertions (evalConfig [{ services.tigerbeetle-host = { inventoryFile = ../../inventories/lab.json; hostName = "tb-0"; }; }]); in
      result "broken input inventory with cluster id 0: \"cluster id is 0, which is for tests\""
        (b.any (lib.hasInfix "cluster id is 0, which is for tests") failed)
        "failed assertions: ${b.toJSON failed}"
    )
    (broken "a schedule without a backup directory" { services.tb-agent = { backupDir = force null; backup.schedule = "0 3 * * *"; }; } "backup.schedule: backups are off")
    (result "broken input a randomized delay over a day: refused by the option's type"
      (refused (evalConfig [ base { services.tb-agent.backup = { schedule = "0 3 * * *"; scheduleRandomizedDelaySec = 86401; }; } ]).services.tb-agent.settings)
      "accepted")
    (broken "backup settings without a directory" { services.tb-agent = { backupDir = force null; settings.backup.keep_last = 3; }; } "backups are off (backupDir = null)")
    (broken "relative backup directory" { services.tb-agent.backupDir = force "backups"; } "backupDir: must be an absolute path")
    (broken "firewall without nftables" { networking.nftables.enable = force false; } "needs networking.nftables.enable = true")
    (broken "no time sync" { services.timesyncd.enable = force false; } "needs time sync")
    (broken "io_uring disabled by a hardening module" { boot.kernel.sysctl."kernel.io_uring_disabled" = 2; } "kernel.io_uring_disabled\" is 2")
    (broken "io_uring limited to a group" { boot.kernel.sysctl."kernel.io_uring_disabled" = 1; } "kernel.io_uring_disabled\" is 1")
    (broken "replica port open with the firewall off" { networking.firewall.enable = false; } "services.tigerbeetle-replica.openFirewall: needs networking.firewall.enable = true")
    (broken "agent port open with the firewall off" { networking.firewall.enable = false; } "services.tb-agent.openFirewall: needs networking.firewall.enable = true")
    (
      let failed = failedAssertions (evalConfig [{ services.tigerbeetle-host = { inventoryFile = ../inventories/good/no-tokens.json; hostName = "tb-0"; }; }]); in
      result "broken input inventory without tokens: \"the inventory has no tokens\""
        (b.any (lib.hasInfix "the inventory has no tokens") failed)
        "failed assertions: ${b.toJSON failed}"
    )
    (broken "host not in the inventory" { services.tigerbeetle-host.hostName = force "tb-9"; } "\"tb-9\" is not under all.hosts")
  ];

  # --- host settings as nixpkgs' own modules merge them (sysctl.nix, firewall-nftables.nix) ------

  # nixpkgs merges net.core.rmem_max and wmem_max by highest value, among the definitions of the
  # highest priority: a mkDefault of ours would lose to any lower plain value.
  sysctlWith = value: withExample [{ boot.kernel.sysctl = { "net.core.rmem_max" = value; "net.core.wmem_max" = value; }; }];
  socketBuffers = config: { inherit (config.boot.kernel.sysctl) "net.core.rmem_max" "net.core.wmem_max"; };
  lowerBuffers = sysctlWith 212992;
  higherBuffers = sysctlWith 33554432;
  firewallOff = withExample [{ networking.firewall.enable = false; }];
  settingResults = [
    (result "sysctl: another module's lower socket buffer maxima lose to ours"
      (socketBuffers lowerBuffers == { "net.core.rmem_max" = 4194304; "net.core.wmem_max" = 16777216; }
        && lib.hasInfix "net.core.rmem_max=4194304\nnet.core.wmem_max=16777216\n" lowerBuffers.environment.etc."sysctl.d/60-nixos.conf".text)
      (b.toJSON (socketBuffers lowerBuffers)))
    (result "sysctl: another module's higher socket buffer maxima win"
      (socketBuffers higherBuffers == { "net.core.rmem_max" = 33554432; "net.core.wmem_max" = 33554432; })
      (b.toJSON (socketBuffers higherBuffers)))
    (result "firewall off: nixpkgs renders no nixos-fw table (so our rules would be dropped) and the modules refuse it"
      (!(firewallOff.networking.nftables.tables ? nixos-fw)
        && b.any (lib.hasInfix "services.tigerbeetle-replica.openFirewall: needs networking.firewall.enable") (failedAssertions firewallOff)
        && b.any (lib.hasInfix "services.tb-agent.openFirewall: needs networking.firewall.enable") (failedAssertions firewallOff))
      "failed assertions: ${b.toJSON (failedAssertions firewallOff)}")
  ];

  # --- everything each host renders, for tests/nix/check-rendered.py ------------------------------

  rendered = lib.listToAttrs (lib.concatLists (lib.mapAttrsToList
    (name: file: map
      (hostName:
        let
          cluster = inventory.fromFile file;
          host = cluster.hosts.${hostName};
          config = evalConfig [{
            services.tigerbeetle-host = { inventoryFile = file; inherit hostName; };
            services.tigerbeetle-replica.allowClusterIdZero = true;
            # The bootstrap unit too: it is a unit a host can install.
            services.tigerbeetle-replica.bootstrap = true;
          }];
          ours = [ "tigerbeetle-replica" "tigerbeetle-replica-bootstrap" "tb-agent" ];
        in
        lib.nameValuePair "${name}/${hostName}" {
          units = lib.listToAttrs (map (unit: lib.nameValuePair "${unit}.service" (unitText config unit)) ours);
          ruleset = ruleset config;
          polkitRules = config.security.polkit.extraConfig;
          acceptRules =
            expectedAcceptLines (host.peer_ips ++ cluster.client_networks) host.port
            ++ expectedAcceptLines (host.peer_ips ++ cluster.orchestrator_networks) host.agent_port;
        })
      (b.attrNames (inventory.fromFile file).hosts))
    goodInventories));

  # --- networking.hostName from the inventory ---------------------------------------------------

  # The example inventory with tb-0 renamed to `name` (an inventory name NixOS may refuse).
  renamedExample = name:
    let example = b.fromJSON (b.readFile ../../inventories/example.json); in
    b.toFile "renamed-example.json" (b.toJSON (example // {
      all = example.all // { hosts = removeAttrs example.all.hosts [ "tb-0" ] // { ${name} = example.all.hosts.tb-0; }; };
    }));
  hostNameFailures = modules: failedAssertions (evalConfig modules);
  hostNameResults = [
    (result "networking.hostName is the inventory's host name"
      (example.networking.hostName == "tb-0")
      example.networking.hostName)
    (
      let failed = hostNameFailures [{ services.tigerbeetle-host = { inventoryFile = ../../inventories/example.json; hostName = "tb-1"; }; networking.hostName = "tb-1"; }]; in
      result "networking.hostName set to the inventory's name: accepted" (failed == [ ]) "failed assertions: ${b.toJSON failed}"
    )
    (
      let failed = hostNameFailures [{ services.tigerbeetle-host = { inventoryFile = ../../inventories/example.json; hostName = "tb-1"; }; networking.hostName = "db-7"; }]; in
      result "broken input networking.hostName another name: refused, naming both"
        (b.any (lib.hasInfix "this host is named \"db-7\" but the inventory names it \"tb-1\"") failed)
        "failed assertions: ${b.toJSON failed}"
    )
    (
      let c = evalConfig [{ services.tigerbeetle-host = { inventoryFile = renamedExample "tb-0.dc1.example.net"; hostName = "tb-0.dc1.example.net"; }; }]; in
      result "an inventory FQDN: networking.hostName its first label, networking.domain the rest"
        (c.networking.hostName == "tb-0" && c.networking.domain == "dc1.example.net" && failedAssertions c == [ ])
        "${c.networking.hostName} ${toString c.networking.domain} ${b.toJSON (failedAssertions c)}"
    )
    (
      let failed = hostNameFailures [{ services.tigerbeetle-host = { inventoryFile = renamedExample "tb_.dc1"; hostName = "tb_.dc1"; }; }]; in
      result "broken input inventory host name NixOS refuses (a label ending in _): an assertion, not a type error"
        (b.any (lib.hasInfix "\"tb_.dc1\" cannot name this host") failed)
        "failed assertions: ${b.toJSON failed}"
    )
  ];

  # A unit at its start limit refuses a start until its failed state is reset: the agent does it
  # when an operator starts or restarts the replica.
  polkitResults = [
    (result "agent may reset the replica unit's failed state"
      (lib.hasInfix ''verb == "reset-failed"'' example.security.polkit.extraConfig)
      example.security.polkit.extraConfig)
  ];
in
{
  results = goodHosts ++ exampleResults ++ otherResults ++ settingResults ++ brokenResults ++ hostNameResults ++ polkitResults;
  inherit agentSettings replicaUnits rendered;
}
