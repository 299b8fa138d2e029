# tb-agent beside this host's replica (services.tigerbeetle-replica), in systemd mode.
#
# The agent reads its configuration from the inventory at start (`tb-agent serve --inventory
# /etc/tigerbeetle/inventory.json --host NAME --settings /etc/tb-agent/settings.toml`): the
# cluster-wide part (listen address, TLS, tokens, peers, the lease) is rendered by tb_proto from
# the inventory that services.tigerbeetle-replica places, the one generator; this module writes
# only the host's own settings file (examples/tb-agent-settings.toml) from its options. Neither
# file holds a secret: the inventory has token hashes, and secrets (the peer token, the TLS key)
# are paths to files outside the Nix store, written at runtime by agenix, sops-nix or similar.
# The agent runs as the replica's user, because `tigerbeetle recover` and backups read and write
# the data file; it may start, stop and restart the replica unit and reset its failed state, and
# no other unit (polkit rule below).
{ config, lib, pkgs, ... }:
let
  inherit (lib) mkOption mkIf types;
  rules = (import ../nix/inventory.nix).rules;
  units = import ../nix/units.nix;
  cfg = config.services.tb-agent;
  replica = config.services.tigerbeetle-replica;
  cluster = replica.cluster;
  host = cluster.hosts.${replica.hostName} or { replica = 0; agent_port = 0; peer_ips = [ ]; };
  tomlFormat = pkgs.formats.toml { };
  replicaUnit = "tigerbeetle-replica.service";
  inventoryPath = "/etc/tigerbeetle/inventory.json";
  settingsPath = "/etc/tb-agent/settings.toml";

  # The settings file's sections, with the keys of tb_proto's SettingsFile
  # (agent/proto/src/host_config.rs); scripts/check-nix runs `tb-agent check-config` on it.
  generated = {
    audit_log = "/var/log/tb-agent/audit.jsonl";
    run = {
      mode = "systemd";
      unit = replicaUnit;
      binary = "${replica.package}/bin/tigerbeetle";
    };
    log.format = "json";
  } // lib.optionalAttrs (cfg.backupDir != null) {
    backup = { dir = cfg.backupDir; } // lib.optionalAttrs (cfg.backup.schedule != "") {
      inherit (cfg.backup) schedule;
      schedule_randomized_delay_s = cfg.backup.scheduleRandomizedDelaySec;
    };
  };

  settingsFile = tomlFormat.generate "tb-agent-settings.toml" cfg.settings;
  agentArgs = "--inventory ${inventoryPath} --host ${lib.escapeShellArg replica.hostName} --settings ${settingsPath}";

  firewallSources = host.peer_ips ++ cluster.orchestrator_networks;
in
{
  imports = [ ./replica.nix ];

  options.services.tb-agent = {
    enable = mkOption {
      type = types.bool;
      default = false;
      description = "Whether to run tb-agent beside this host's TigerBeetle replica.";
    };
    package = mkOption {
      type = types.package;
      description = "The package providing bin/tb-agent.";
    };
    openFirewall = mkOption {
      type = types.bool;
      default = true;
      description = "Open the agent port to the peer replicas' hosts and the inventory's orchestrator networks only (nftables).";
    };
    backupDir = mkOption {
      type = types.nullOr types.str;
      default = "/var/lib/tb-backups";
      description = ''
        Directory of the agent's backups (docs/backups.md), created 0700 for the agent; outside
        the data directory. Null: no backups. Retention and compression are the agent's defaults
        (keep the last 7, zstd), changed through settings.backup (its dir is this option).
      '';
    };
    backup.schedule = mkOption {
      type = types.str;
      default = "";
      example = "30 2 * * *";
      description = ''
        When the agent takes a backup by itself: a 5-field cron expression in UTC (minute hour
        day-of-month month day-of-week), written as [backup] schedule. "" takes none. A scheduled
        backup is the same job as `tbctl backup` (quorum guard, lease, retention, audit lines
        with actor "schedule"); one refused is logged and retried about every minute for up
        to an hour, never past the next tick.
      '';
    };
    backup.scheduleRandomizedDelaySec = mkOption {
      type = types.ints.between 0 86400;
      default = 0;
      description = "Seconds of random delay after each scheduled tick (written as [backup] schedule_randomized_delay_s), so that the replicas of a cluster do not all stop for a backup at once.";
    };
    settings = mkOption {
      type = tomlFormat.type;
      default = { };
      description = ''
        The agent's settings file (/etc/tb-agent/settings.toml; examples/tb-agent-settings.toml):
        the host's own sections run, audit_log, log, health, control and backup, generated from
        the options above. Add keys here (health.free_bytes_min, backup.keep_last, ...); what is
        cluster-wide belongs in the inventory.
      '';
    };
    settingsFile = mkOption {
      type = types.package;
      readOnly = true;
      default = settingsFile;
      description = "The generated settings file (read-only).";
    };
  };

  config = mkIf cfg.enable {
    services.tb-agent.settings = generated;

    environment.etc."tb-agent/settings.toml".source = settingsFile;

    assertions = [
      {
        assertion = replica.enable;
        message = "services.tb-agent: runs beside this host's replica in systemd mode: enable services.tigerbeetle-replica too";
      }
      {
        # Valid in an inventory (tbctl reads it), refused by the agent at start.
        assertion = cluster.agent_tokens != [ ];
        message = "services.tb-agent: the inventory has no tokens (all.vars.tb_agent_tokens): the agent refuses to start without one; 1 to 16 tokens are required";
      }
      {
        assertion = cfg.backupDir != null || !(cfg.settings ? backup);
        message = "services.tb-agent.settings.backup: backups are off (backupDir = null); set services.tb-agent.backupDir to turn them on";
      }
      {
        assertion = cfg.backupDir != null || cfg.backup.schedule == "";
        message = "services.tb-agent.backup.schedule: backups are off (backupDir = null); set services.tb-agent.backupDir to schedule them";
      }
      {
        assertion = cfg.backupDir == null || rules.pathReason cfg.backupDir == null;
        message = "services.tb-agent.backupDir: ${toString (rules.pathReason cfg.backupDir)}";
      }
      {
        assertion = !cfg.openFirewall || config.networking.nftables.enable;
        message = "services.tb-agent.openFirewall: needs networking.nftables.enable = true (the rules are nftables rules)";
      }
      {
        # With the firewall off, nixpkgs' firewall-nftables.nix renders no input chain: the
        # rule below would be dropped and the agent port open to everyone.
        assertion = !cfg.openFirewall || config.networking.firewall.enable;
        message = "services.tb-agent.openFirewall: needs networking.firewall.enable = true: with the firewall off, nixpkgs drops the rule that limits the agent port to the peer agents and the orchestrator networks, and the port is open to everyone (set openFirewall = false to filter it yourself)";
      }
    ];

    warnings = lib.optional (cfg.backup.schedule == "" && cfg.backup.scheduleRandomizedDelaySec != 0)
      "services.tb-agent.backup.scheduleRandomizedDelaySec is set but backup.schedule is empty: no backup is scheduled.";

    # The backup directory must exist before the unit starts: ReadWritePaths= of a missing path
    # fails the unit's namespace setup.
    systemd.tmpfiles.rules = lib.optional (cfg.backupDir != null) "d ${cfg.backupDir} 0700 ${replica.user} ${replica.user} - -";

    # The agent may start, stop and restart the replica unit, and reset its failed state (a unit
    # at its start limit refuses a start until then: the agent resets it when an operator asks
    # for a start or restart), and nothing else.
    security.polkit.enable = true;
    # The one copy of the rule, with the Ansible role's (ansible/roles/tb_agent/files/).
    security.polkit.extraConfig = builtins.replaceStrings [ "@USER@" "@UNIT@" ]
      [ (builtins.toJSON replica.user) (builtins.toJSON replicaUnit) ]
      (builtins.readFile ../ansible/roles/tb_agent/files/tb-agent.rules.js);

    systemd.services.tb-agent = {
      description = "tb-agent beside TigerBeetle replica ${toString host.replica}";
      wantedBy = [ "multi-user.target" ];
      wants = [ "network-online.target" ];
      after = [ "network-online.target" ];
      # Both files are read at start: a changed inventory or settings file restarts the agent.
      restartTriggers = [ settingsFile replica.inventoryFile ];
      startLimitIntervalSec = 600;
      startLimitBurst = 10;
      # Type, restart policy, the journal group (the memlock warning), the log directory,
      # capabilities (CAP_IPC_LOCK: `tigerbeetle recover` locks memory, and the agent reads the
      # replica's /proc/<pid>/fd for the StatsD origin check), the syscall filter and the
      # hardening: one list with the Ansible role's, reasons included (nix/units.nix).
      serviceConfig = units.agent // {
        User = replica.user;
        Group = replica.user;
        ExecStartPre = [ "${cfg.package}/bin/tb-agent check-config ${agentArgs}" ];
        ExecStart = "${cfg.package}/bin/tb-agent serve ${agentArgs}";
        ReadWritePaths = [ cluster.data_dir ] ++ lib.optional (cfg.backupDir != null) cfg.backupDir;
      };
    };

    networking.firewall.extraInputRules = mkIf (cfg.openFirewall && firewallSources != [ ]) ''
      # tb-agent: peer agents (quorum guard) and orchestrator networks only.
      ip saddr { ${lib.concatStringsSep ", " firewallSources} } tcp dport ${toString host.agent_port} accept
    '';
  };
}
