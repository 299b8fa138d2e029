# One TigerBeetle replica as a hardened systemd service.
#
# Differences from nixpkgs' services.tigerbeetle (which a host may import too: nothing here
# shares its option or unit names):
# - memory is locked (CAP_IPC_LOCK, LimitMEMLOCK=infinity), as upstream's own unit does;
# - a crashed replica restarts, at a bounded rate;
# - the replica port is open only to the peer replicas and the configured client networks;
# - the data file is never formatted on start. Formatting happens only through the explicit
#   bootstrap unit at a cluster's first deploy; a missing file leaves the unit inactive (not
#   failed: `nixos-rebuild switch` succeeds) with a message that points to `tbctl recover`.
{ config, lib, pkgs, ... }:
let
  inherit (lib) mkOption mkIf types;
  rules = (import ../nix/inventory.nix).rules;
  units = import ../nix/units.nix;
  cfg = config.services.tigerbeetle-replica;

  dataFile = rules.dataFile cfg.dataDir cfg.clusterId cfg.replicaIndex;
  # Parsed leniently: the assertions below report bad values, so nothing here may throw first.
  socketOr = address: let s = rules.parseSocket address; in if s == null then { ip = address; port = 0; } else s;
  ownSocket =
    if cfg.replicaIndex >= 0 && cfg.replicaIndex < lib.length cfg.addresses
    then socketOr (lib.elemAt cfg.addresses cfg.replicaIndex)
    else { ip = ""; port = 0; };
  peerIps = lib.unique (lib.filter (ip: ip != ownSocket.ip) (map (address: (socketOr address).ip) cfg.addresses));

  startFlags = [
    "--addresses=${lib.concatStringsSep "," cfg.addresses}"
  ]
  ++ lib.optional (cfg.cacheGrid != null) "--cache-grid=${cfg.cacheGrid}"
  ++ lib.optionals (cfg.statsdPort != null) [ "--experimental" "--statsd=127.0.0.1:${toString cfg.statsdPort}" ]
  ++ cfg.extraFlags;

  # The main process is the start guard (nix/units.nix: the script the Ansible role installs
  # too): it refuses to start without the data file (and never creates one), then becomes
  # `tigerbeetle start`. Exit status 78 (EX_CONFIG) means "waiting for bootstrap or recover": a
  # success status (SuccessExitStatus), so the unit ends inactive, not failed, and
  # `nixos-rebuild switch` (which exits 4 when a unit it started failed) succeeds on a first
  # deploy; `systemctl status` shows the refusal in its log lines, and the agent's readiness
  # says the data file is missing. It is never restarted (a success, and
  # RestartPreventExitStatus), so a missing file neither loops nor uses up the start limit, and
  # the agent's `systemctl start` after `tbctl recover` is not refused. TigerBeetle's own exit
  # statuses are 1 to 7 (vsr.zig, FatalReason) and its crashes are signals: 78 comes only from
  # the guard.
  # Exit status 77 (EX_NOPERM): the data file belongs to another user (a renamed replica user);
  # 64 (EX_USAGE): the guard was called wrongly. Neither is restarted.
  # A failure, not restarted: `switch` and the rollout stop there, with the reason in the log.
  startGuard = pkgs.writeShellScript "tigerbeetle-replica-start" units.startGuard;
  # One argument of ExecStart= as systemd reads it: bare when it is plain, else quoted with its
  # specifiers (%) and variables ($) escaped (nixpkgs' utils.escapeSystemdExecArg, which the
  # tests' stand-in module arguments do not provide).
  execArg = arg:
    if builtins.match "[A-Za-z0-9,._+:@/=-]+" arg != null then arg
    else lib.replaceStrings [ "%" "$" ] [ "%%" "$$" ] (builtins.toJSON arg);
  startCommand = lib.concatMapStringsSep " " execArg
    ([ "${startGuard}" "--replica" (toString cfg.replicaIndex) "--" "${cfg.package}/bin/tigerbeetle" "start" ]
      ++ startFlags ++ [ dataFile ]);

  # The explicit first-deploy format: refuses when the file exists, and publishes the file only
  # once it is complete (format into a temporary name, then a hard link, which fails if a file
  # appeared meanwhile), so a crash mid-format never leaves a half file that looks real.
  bootstrapScript = pkgs.writeShellScript "tigerbeetle-replica-bootstrap" ''
    set -eu
    data_file=${lib.escapeShellArg dataFile}
    if [ -e "$data_file" ]; then
      echo "tigerbeetle-replica-bootstrap: $data_file exists; refusing to format over it. Bootstrap is only for a cluster's first deploy: set services.tigerbeetle-replica.bootstrap = false." >&2
      exit 1
    fi
    partial="$data_file.formatting"
    rm -f "$partial"
    ${cfg.package}/bin/tigerbeetle format --cluster=${cfg.clusterId} --replica=${toString cfg.replicaIndex} --replica-count=${toString cfg.replicaCount} "$partial"
    ln "$partial" "$data_file"
    rm "$partial"
    echo "tigerbeetle-replica-bootstrap: formatted $data_file (cluster ${cfg.clusterId}, replica ${toString cfg.replicaIndex} of ${toString cfg.replicaCount})"
  '';

  # Capabilities, limits and upstream's hardening (docs/operating/deploying/systemd.md), with a
  # static user instead of DynamicUser: one list with the Ansible role's (nix/units.nix).
  hardening = units.replica // { ReadWritePaths = [ cfg.dataDir ]; };

  peerAndClientSources = peerIps ++ cfg.clientNetworks;
in
{
  options.services.tigerbeetle-replica = {
    enable = mkOption {
      type = types.bool;
      default = false;
      description = "Whether to run this host's TigerBeetle replica.";
    };
    package = mkOption {
      type = types.package;
      description = "The tigerbeetle package: the flake's 0.16.78 build by default, or the official multiversion release.";
    };
    clusterId = mkOption {
      type = types.str;
      description = "The cluster id: a decimal u128 written as a string (Nix integers stop at 2^63). Fixed at format time.";
    };
    allowClusterIdZero = mkOption {
      type = types.bool;
      default = false;
      description = "Allow cluster id 0, which is for tests: production clusters should have a random id so a client cannot reach the wrong cluster.";
    };
    replicaIndex = mkOption {
      type = types.int;
      description = "This replica's index, 0 to replicaCount - 1. Fixed at format time.";
    };
    replicaCount = mkOption {
      type = types.int;
      description = "Number of replicas, 1 to 6. Fixed at format time.";
    };
    addresses = mkOption {
      type = types.listOf types.str;
      description = "Every replica's IPv4:port, in replica order; identical on every replica and client.";
    };
    cacheGrid = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "4GiB";
      description = "--cache-grid (digits, then KiB, MiB, GiB or TiB); null keeps TigerBeetle's default.";
    };
    dataDir = mkOption {
      type = types.str;
      default = "/var/lib/tigerbeetle";
      description = "Directory of the data file, which is named <clusterId>_<replicaIndex>.tigerbeetle.";
    };
    dataFile = mkOption {
      type = types.str;
      readOnly = true;
      default = dataFile;
      description = "The data file's path (read-only, derived from dataDir, clusterId and replicaIndex).";
    };
    extraFlags = mkOption {
      type = types.listOf types.str;
      default = [ ];
      description = "More `tigerbeetle start` flags.";
    };
    statsdPort = mkOption {
      type = types.nullOr types.port;
      default = 8125;
      description = "UDP port on 127.0.0.1 where the replica sends DogStatsD metrics (the local agent); null to send none.";
    };
    user = mkOption {
      type = types.str;
      default = "tigerbeetle";
      description = ''
        Dedicated user (and group) of the replica; the agent runs as this user too. The same
        name as the Ansible role's (tigerbeetle_user). Up to this layout the default was
        "tb-replica": a host deployed then keeps it by setting this option to "tb-replica", or
        moves its files to the new user first (docs/nixos.md, "The replica's user").
      '';
    };
    bootstrap = mkOption {
      type = types.bool;
      default = false;
      description = ''
        Install tigerbeetle-replica-bootstrap.service, a one-shot unit that formats the data file
        and refuses when it exists. Only for a cluster's first deploy; nothing starts it
        automatically (run `systemctl start tigerbeetle-replica-bootstrap.service`). Turn it off
        once the cluster runs.
      '';
    };
    clientNetworks = mkOption {
      type = types.listOf types.str;
      default = [ ];
      description = "IPv4 networks (a.b.c.d/n) whose clients may reach the replica port.";
    };
    peerIps = mkOption {
      type = types.listOf types.str;
      readOnly = true;
      description = "The other replicas' IPs (read-only, derived from addresses and replicaIndex).";
    };
    openFirewall = mkOption {
      type = types.bool;
      default = true;
      description = "Open the replica port to the peer replicas and clientNetworks only (nftables).";
    };
  };

  config = mkIf cfg.enable {
    # Read by the agent module and by tests; the unit's port rule is derived from it.
    services.tigerbeetle-replica.peerIps = peerIps;

    assertions =
      let
        count = cfg.replicaCount;
        badAddresses = lib.filter (address: rules.parseSocket address == null) cfg.addresses;
        badNetworks = lib.filter (network: rules.parseCidr network == null) cfg.clientNetworks;
      in
      [
        {
          assertion = rules.clusterIdReason cfg.clusterId == null;
          message = "services.tigerbeetle-replica.clusterId: must be a decimal u128 string without leading zeros, got \"${cfg.clusterId}\"";
        }
        {
          assertion = cfg.clusterId != "0" || cfg.allowClusterIdZero;
          message = "services.tigerbeetle-replica.clusterId: 0 is for tests; give the cluster a random id (or set allowClusterIdZero = true in a test)";
        }
        {
          assertion = count >= 1 && count <= 6;
          message = "services.tigerbeetle-replica.replicaCount: must be between 1 and 6, got ${toString count}";
        }
        {
          assertion = cfg.replicaIndex >= 0 && cfg.replicaIndex < count;
          message = "services.tigerbeetle-replica.replicaIndex: must be below replicaCount (${toString count}), got ${toString cfg.replicaIndex}";
        }
        {
          assertion = lib.length cfg.addresses == count;
          message = "services.tigerbeetle-replica.addresses: has ${toString (lib.length cfg.addresses)} entries but replicaCount is ${toString count}";
        }
        {
          assertion = badAddresses == [ ];
          message = "services.tigerbeetle-replica.addresses: must be IPv4:port (TigerBeetle takes no DNS names): ${lib.concatStringsSep ", " badAddresses}";
        }
        {
          assertion = lib.unique cfg.addresses == cfg.addresses;
          message = "services.tigerbeetle-replica.addresses: must be unique";
        }
        {
          assertion = rules.cacheGridReason cfg.cacheGrid == null;
          message = "services.tigerbeetle-replica.cacheGrid: must be a size such as \"4GiB\" (digits, then KiB, MiB, GiB or TiB), got \"${toString cfg.cacheGrid}\"";
        }
        {
          assertion = rules.pathReason cfg.dataDir == null;
          message = "services.tigerbeetle-replica.dataDir: ${toString (rules.pathReason cfg.dataDir)}";
        }
        {
          assertion = badNetworks == [ ];
          message = "services.tigerbeetle-replica.clientNetworks: must be IPv4 networks a.b.c.d/n with no bits after the prefix: ${lib.concatStringsSep ", " badNetworks}";
        }
        {
          assertion = !cfg.openFirewall || config.networking.nftables.enable;
          message = "services.tigerbeetle-replica.openFirewall: needs networking.nftables.enable = true (the rules are nftables rules)";
        }
        {
          # With the firewall off, nixpkgs' firewall-nftables.nix renders no input chain: the
          # rules below would be dropped and the port open to everyone.
          assertion = !cfg.openFirewall || config.networking.firewall.enable;
          message = "services.tigerbeetle-replica.openFirewall: needs networking.firewall.enable = true: with the firewall off, nixpkgs drops the rules that limit the replica port to its peers and clients, and the port is open to everyone (set openFirewall = false to filter it yourself)";
        }
        {
          # kernel.io_uring_disabled: 1 allows io_uring only to CAP_SYS_ADMIN and the members of
          # kernel.io_uring_group, 2 to no one; TigerBeetle does all its I/O through it. A
          # hardening module's value would otherwise win over replica-host.nix's default silently.
          assertion = builtins.elem (config.boot.kernel.sysctl."kernel.io_uring_disabled" or null) [ null 0 "0" false ];
          message = "services.tigerbeetle-replica: boot.kernel.sysctl.\"kernel.io_uring_disabled\" is ${toString config.boot.kernel.sysctl."kernel.io_uring_disabled"}, which stops the replica's io_uring (1: only CAP_SYS_ADMIN or kernel.io_uring_group, 2: no one); TigerBeetle does all its I/O through io_uring: set it to 0 on replica hosts";
        }
        {
          # nixpkgs' services.tigerbeetle runs as a DynamicUser named after its unit, tigerbeetle:
          # with a static user of that name, systemd would run it as this replica's user.
          assertion = !(config.services.tigerbeetle.enable or false) || cfg.user != "tigerbeetle";
          message = "services.tigerbeetle-replica.user: \"tigerbeetle\" is also the user of nixpkgs' services.tigerbeetle, which is enabled: give this replica another user";
        }
      ];

    warnings = lib.optional cfg.bootstrap
      "services.tigerbeetle-replica.bootstrap is on: turn it off once the cluster has started, so that no one can format this replica again by mistake.";

    users.users.${cfg.user} = {
      isSystemUser = true;
      group = cfg.user;
      description = "TigerBeetle replica and its agent";
    };
    users.groups.${cfg.user} = { };

    systemd.tmpfiles.rules = [ "d ${cfg.dataDir} 0700 ${cfg.user} ${cfg.user} - -" ];

    systemd.services.tigerbeetle-replica = {
      description = "TigerBeetle replica ${toString cfg.replicaIndex} of cluster ${cfg.clusterId}";
      documentation = [ "https://docs.tigerbeetle.com/operating/" ];
      wantedBy = [ "multi-user.target" ];
      wants = [ "network-online.target" ];
      after = [ "network-online.target" "tigerbeetle-replica-bootstrap.service" ];
      startLimitIntervalSec = 600;
      startLimitBurst = 5;
      # `switch` never restarts a running replica (switch-to-configuration reads this as
      # X-RestartIfChanged=false): a deployer that switches several hosts at once (colmena,
      # deploy-rs) would otherwise restart every changed replica together, behind the quorum
      # guard's back. The new unit is loaded and takes effect at the replica's next start: the
      # rollout (ansible/playbooks/rollout.yml) restarts it through its agent, one host at a time
      # (docs/nixos.md, "What switch does to a running replica").
      restartIfChanged = false;
      # Type, Restart=, and the guard's exit statuses (SuccessExitStatus=78,
      # RestartPreventExitStatus=78 77 64: see startGuard above) come with the hardening from the
      # one list (nix/units.nix).
      serviceConfig = units.replica_service // hardening // {
        User = cfg.user;
        Group = cfg.user;
        ExecStart = startCommand;
        RestartSec = 5;
      };
    };

    systemd.services.tigerbeetle-replica-bootstrap = mkIf cfg.bootstrap {
      description = "Format TigerBeetle replica ${toString cfg.replicaIndex} (first deploy only)";
      before = [ "tigerbeetle-replica.service" ];
      serviceConfig = hardening // {
        Type = "oneshot";
        User = cfg.user;
        Group = cfg.user;
        ExecStart = "${bootstrapScript}";
      };
    };

    networking.firewall.extraInputRules = mkIf (cfg.openFirewall && peerAndClientSources != [ ]) ''
      # TigerBeetle replica ${toString cfg.replicaIndex}: peer replicas and client networks only.
      ip saddr { ${lib.concatStringsSep ", " peerAndClientSources} } tcp dport ${toString ownSocket.port} accept
    '';
  };
}
