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
  inventory = import ../nix/inventory.nix;
  units = import ../nix/units.nix;
  cfg = config.services.tigerbeetle-replica;

  # The inventory as the host holds it: the replica's start (tb-agent replica-start) and the agent
  # read this file at start; evaluation reads only what the units and the firewall need from it
  # (nix/inventory.nix: the same rules as tb_proto's reader, kept equal by scripts/check-nix).
  inventoryPath = "/etc/tigerbeetle/inventory.json";
  cluster = inventory.fromFile cfg.inventoryFile;
  hostKnown = cluster.hosts ? ${cfg.hostName};
  host = if hostKnown then cluster.hosts.${cfg.hostName} else { replica = 0; port = 0; peer_ips = [ ]; data_file = ""; };

  # The main process is `tb-agent replica-start` (the same subcommand the Ansible role's unit
  # runs): it reads the inventory, refuses to start without the data file (and never creates
  # one), then becomes `tigerbeetle start` with the flags tb_proto renders for this host (the
  # one copy of the command line), and extraFlags after `--`. Exit status 78 (EX_CONFIG) means
  # "waiting for bootstrap or recover": a success status (SuccessExitStatus), so the unit ends
  # inactive, not failed, and `nixos-rebuild switch` (which exits 4 when a unit it started
  # failed) succeeds on a first deploy; `systemctl status` shows the refusal in its log lines,
  # and the agent's readiness says the data file is missing. It is never restarted (a success,
  # and RestartPreventExitStatus), so a missing file neither loops nor uses up the start limit,
  # and the agent's `systemctl start` after `tbctl recover` is not refused. TigerBeetle's own
  # exit statuses are 1 to 7 (vsr.zig, FatalReason) and its crashes are signals: 78 comes only
  # from the guard.
  # Exit status 77 (EX_NOPERM): the data file belongs to another user (a renamed replica user);
  # 64 (EX_USAGE): the subcommand was called wrongly or the inventory is unreadable. Neither is
  # restarted: `switch` and the rollout stop there, with the reason in the log.
  # One argument of ExecStart= as systemd reads it: bare when it is plain, else quoted with its
  # specifiers (%) and variables ($) escaped (nixpkgs' utils.escapeSystemdExecArg, which the
  # tests' stand-in module arguments do not provide).
  execArg = arg:
    if builtins.match "[A-Za-z0-9,._+:@/=-]+" arg != null then arg
    else lib.replaceStrings [ "%" "$" ] [ "%%" "$$" ] (builtins.toJSON arg);
  startCommand = lib.concatMapStringsSep " " execArg
    ([ "${cfg.agentPackage}/bin/tb-agent" "replica-start" "--inventory" inventoryPath "--host" cfg.hostName "--binary" "${cfg.package}/bin/tigerbeetle" ]
      ++ lib.optionals (cfg.extraFlags != [ ]) ([ "--" ] ++ cfg.extraFlags));

  # The explicit first-deploy format: refuses when the file exists, and publishes the file only
  # once it is complete (format into a temporary name, then a hard link, which fails if a file
  # appeared meanwhile), so a crash mid-format never leaves a half file that looks real.
  bootstrapScript = pkgs.writeShellScript "tigerbeetle-replica-bootstrap" ''
    set -eu
    data_file=${lib.escapeShellArg host.data_file}
    if [ -e "$data_file" ]; then
      echo "tigerbeetle-replica-bootstrap: $data_file exists; refusing to format over it. Bootstrap is only for a cluster's first deploy: set services.tigerbeetle-replica.bootstrap = false." >&2
      exit 1
    fi
    partial="$data_file.formatting"
    rm -f "$partial"
    ${cfg.package}/bin/tigerbeetle format --cluster=${cluster.cluster_id} --replica=${toString host.replica} --replica-count=${toString cluster.replica_count} "$partial"
    ln "$partial" "$data_file"
    rm "$partial"
    echo "tigerbeetle-replica-bootstrap: formatted $data_file (cluster ${cluster.cluster_id}, replica ${toString host.replica} of ${toString cluster.replica_count})"
  '';

  # Capabilities, limits and upstream's hardening (docs/operating/deploying/systemd.md), with a
  # static user instead of DynamicUser: one list with the Ansible role's (nix/units.nix).
  hardening = units.replica // { ReadWritePaths = [ cluster.data_dir ]; };

  peerAndClientSources = host.peer_ips ++ cluster.client_networks;
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
    agentPackage = mkOption {
      type = types.package;
      description = "The package providing bin/tb-agent, whose `replica-start` subcommand starts the replica (the flake's tb-agent by default).";
    };
    inventoryFile = mkOption {
      type = types.path;
      description = ''
        The inventory (inventories/<env>.json, docs/inventory.md): the cluster's configuration.
        Placed at /etc/tigerbeetle/inventory.json (0644: it holds token hashes, never secrets),
        where the replica's start and the agent read it.
      '';
    };
    hostName = mkOption {
      type = types.str;
      description = "This host's name under all.hosts in the inventory.";
    };
    cluster = mkOption {
      type = types.attrs;
      readOnly = true;
      description = "The inventory as nix/inventory.nix resolves it (read-only): what evaluation needs from it (the firewall, the units' descriptions, the bootstrap's format).";
    };
    allowClusterIdZero = mkOption {
      type = types.bool;
      default = false;
      description = "Allow cluster id 0, which is for tests: production clusters should have a random id so a client cannot reach the wrong cluster.";
    };
    dataFile = mkOption {
      type = types.str;
      readOnly = true;
      description = "The data file's path (read-only, from the inventory: <data dir>/<cluster id>_<replica>.tigerbeetle).";
    };
    extraFlags = mkOption {
      type = types.listOf types.str;
      default = [ ];
      description = "More `tigerbeetle start` flags, passed after `--` to `tb-agent replica-start`.";
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
    openFirewall = mkOption {
      type = types.bool;
      default = true;
      description = "Open the replica port to the peer replicas and the inventory's client networks only (nftables).";
    };
  };

  config = mkIf cfg.enable {
    # Read by the agent module and by tests.
    services.tigerbeetle-replica.cluster = cluster;
    services.tigerbeetle-replica.dataFile = host.data_file;

    # The host's copy of the inventory: a file, not a link into the store, with the mode the
    # Ansible role gives it.
    environment.etc."tigerbeetle/inventory.json" = { source = cfg.inventoryFile; mode = "0644"; };

    assertions = [
      {
        assertion = hostKnown;
        message = "services.tigerbeetle-replica.hostName: \"${cfg.hostName}\" is not under all.hosts in ${toString cfg.inventoryFile} (hosts: ${lib.concatStringsSep ", " (lib.attrNames cluster.hosts)})";
      }
      {
        assertion = cluster.cluster_id != "0" || cfg.allowClusterIdZero;
        message = "services.tigerbeetle-replica: the inventory's cluster id is 0, which is for tests; give the cluster a random id (or set services.tigerbeetle-replica.allowClusterIdZero = true in a test)";
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

    systemd.tmpfiles.rules = [ "d ${cluster.data_dir} 0700 ${cfg.user} ${cfg.user} - -" ];

    systemd.services.tigerbeetle-replica = {
      description = "TigerBeetle replica ${toString host.replica} of cluster ${cluster.cluster_id}";
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
      # The start command names the inventory by its fixed path, so a changed inventory (new
      # addresses, another cache grid) would leave the unit file as it was, and the rollout,
      # which restarts a replica whose built unit differs from the active one, would skip it.
      # The inventory's store path in the unit (X-Restart-Triggers=) makes it differ.
      restartTriggers = [ cfg.inventoryFile ];
      # Type, Restart=, and the start's exit statuses (SuccessExitStatus=78,
      # RestartPreventExitStatus=78 77 64: see startCommand above) come with the hardening from
      # the one list (nix/units.nix).
      serviceConfig = units.replica_service // hardening // {
        User = cfg.user;
        Group = cfg.user;
        ExecStart = startCommand;
        RestartSec = 5;
      };
    };

    systemd.services.tigerbeetle-replica-bootstrap = mkIf cfg.bootstrap {
      description = "Format TigerBeetle replica ${toString host.replica} (first deploy only)";
      before = [ "tigerbeetle-replica.service" ];
      serviceConfig = hardening // {
        Type = "oneshot";
        User = cfg.user;
        Group = cfg.user;
        ExecStart = "${bootstrapScript}";
      };
    };

    networking.firewall.extraInputRules = mkIf (cfg.openFirewall && peerAndClientSources != [ ]) ''
      # TigerBeetle replica ${toString host.replica}: peer replicas and client networks only.
      ip saddr { ${lib.concatStringsSep ", " peerAndClientSources} } tcp dport ${toString host.port} accept
    '';
  };
}
