# tb-agent beside this host's replica (services.tigerbeetle-replica), in systemd mode.
#
# The TOML config is generated from options with pkgs.formats.toml. It holds token hashes only;
# secrets (the peer token, the TLS key) are paths to files outside the Nix store, written at
# runtime by agenix, sops-nix or similar. The agent runs as the replica's user, because
# `tigerbeetle recover` and backups read and write the data file; it may start, stop and restart
# the replica unit and reset its failed state, and no other unit (polkit rule below).
{ config, lib, pkgs, ... }:
let
  inherit (lib) mkOption mkIf types;
  rules = (import ../nix/inventory.nix).rules;
  units = import ../nix/units.nix;
  cfg = config.services.tb-agent;
  replica = config.services.tigerbeetle-replica;
  tomlFormat = pkgs.formats.toml { };
  replicaUnit = "tigerbeetle-replica.service";

  listenSocket = rules.parseSocket cfg.listen;
  listenPort = if listenSocket == null then 0 else listenSocket.port;

  generated = {
    server = {
      listen = cfg.listen;
      audit_log = "/var/log/tb-agent/audit.jsonl";
    } // lib.optionalAttrs (cfg.tls != null) {
      tls = {
        cert_file = cfg.tls.certFile;
        key_file = cfg.tls.keyFile;
      } // lib.optionalAttrs (cfg.tls.clientCaFile != null) { client_ca_file = cfg.tls.clientCaFile; };
    };
    log.format = "json";
    tokens = map (token: { inherit (token) name scopes sha256; }) cfg.tokens;
    replica = {
      cluster_id = replica.clusterId;
      index = replica.replicaIndex;
      count = replica.replicaCount;
      addresses = replica.addresses;
      data_file = replica.dataFile;
      statsd_port = if replica.statsdPort == null then 8125 else replica.statsdPort;
      run = {
        mode = "systemd";
        unit = replicaUnit;
        binary = "${replica.package}/bin/tigerbeetle";
      };
    };
  } // lib.optionalAttrs (cfg.backupDir != null) {
    backup.dir = cfg.backupDir;
  } // lib.optionalAttrs (cfg.agentUrls != [ ]) {
    peers = {
      agent_urls = cfg.agentUrls;
      token_file = cfg.peerTokenFile;
    } // lib.optionalAttrs (cfg.peerCaFile != null) { ca_file = cfg.peerCaFile; };
  };

  configFile = tomlFormat.generate "tb-agent.toml" cfg.settings;

  firewallSources = replica.peerIps ++ cfg.orchestratorNetworks;
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
    listen = mkOption {
      type = types.str;
      example = "10.0.0.10:7443";
      description = "IPv4:port the agent's HTTP API listens on. Without tls, only loopback or private addresses are accepted.";
    };
    tls = mkOption {
      default = null;
      description = "Serve the API over TLS. Files are read at runtime; the key must not be in the Nix store.";
      type = types.nullOr (types.submodule {
        options = {
          certFile = mkOption { type = types.str; description = "PEM certificate chain."; };
          keyFile = mkOption { type = types.str; description = "PEM private key (a secret: outside the store)."; };
          clientCaFile = mkOption {
            type = types.nullOr types.str;
            default = null;
            description = "Require client certificates signed by this CA (mutual TLS).";
          };
        };
      });
    };
    tokens = mkOption {
      description = "Accepted bearer tokens: a name, scopes, and the SHA-256 of the secret (tb-agent hash-token), never the secret.";
      type = types.listOf (types.submodule {
        options = {
          name = mkOption { type = types.str; };
          scopes = mkOption { type = types.listOf (types.enum [ "read" "control" "backup" ]); };
          sha256 = mkOption { type = types.str; };
        };
      });
    };
    agentUrls = mkOption {
      type = types.listOf types.str;
      default = [ ];
      description = "Every replica's agent URL in replica order, for the quorum guard; empty for a 1-replica cluster.";
    };
    peerTokenFile = mkOption {
      type = types.str;
      default = "/etc/tb-agent/peer.token";
      description = "File holding a read-scoped secret that the peer agents accept (outside the store).";
    };
    peerCaFile = mkOption {
      type = types.nullOr types.str;
      default = null;
      description = "CA that signs the peer agents' certificates.";
    };
    orchestratorNetworks = mkOption {
      type = types.listOf types.str;
      default = [ ];
      description = "IPv4 networks (tbctl, Prometheus) allowed to reach the agent port; the peer replicas' hosts always are.";
    };
    openFirewall = mkOption {
      type = types.bool;
      default = true;
      description = "Open the agent port to the peer replicas' hosts and orchestratorNetworks only (nftables).";
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
    settings = mkOption {
      type = tomlFormat.type;
      default = { };
      description = "The agent's TOML config (see examples/tb-agent.toml). Generated from the options above; add sections such as backup or health here.";
    };
    configFile = mkOption {
      type = types.package;
      readOnly = true;
      default = configFile;
      description = "The generated config file (read-only).";
    };
  };

  config = mkIf cfg.enable {
    services.tb-agent.settings = generated;

    assertions =
      let
        badNetworks = lib.filter (network: rules.parseCidr network == null) cfg.orchestratorNetworks;
        tokenNames = map (token: token.name) cfg.tokens;
        badHashes = lib.filter (token: builtins.match "[0-9a-f]{64}" token.sha256 == null) cfg.tokens;
        secretPaths = [{ option = "peerTokenFile"; path = cfg.peerTokenFile; }]
          ++ lib.optional (cfg.tls != null) { option = "tls.keyFile"; path = cfg.tls.keyFile; };
      in
      [
        {
          assertion = replica.enable;
          message = "services.tb-agent: runs beside this host's replica in systemd mode: enable services.tigerbeetle-replica too";
        }
        {
          assertion = listenSocket != null;
          message = "services.tb-agent.listen: must be IPv4:port, got \"${cfg.listen}\"";
        }
        {
          assertion = listenSocket == null || cfg.tls != null || rules.isPrivateIpv4 listenSocket.octets;
          message = "services.tb-agent.listen: ${cfg.listen} is a public address and bearer tokens would cross it in clear text: configure services.tb-agent.tls";
        }
        {
          assertion = cfg.tokens != [ ] && lib.length cfg.tokens <= 16;
          message = "services.tb-agent.tokens: 1 to 16 tokens are required";
        }
        {
          assertion = lib.unique tokenNames == tokenNames;
          message = "services.tb-agent.tokens: names must be unique";
        }
        {
          assertion = badHashes == [ ];
          message = "services.tb-agent.tokens: sha256 must be 64 lowercase hex digits (tb-agent hash-token), never the secret itself: ${lib.concatMapStringsSep ", " (token: token.name) badHashes}";
        }
        {
          assertion = badNetworks == [ ];
          message = "services.tb-agent.orchestratorNetworks: must be IPv4 networks a.b.c.d/n with no bits after the prefix: ${lib.concatStringsSep ", " badNetworks}";
        }
        {
          assertion = cfg.agentUrls == [ ] || lib.length cfg.agentUrls == replica.replicaCount;
          message = "services.tb-agent.agentUrls: has ${toString (lib.length cfg.agentUrls)} entries but services.tigerbeetle-replica.replicaCount is ${toString replica.replicaCount}";
        }
        {
          assertion = cfg.backupDir != null || !(cfg.settings ? backup);
          message = "services.tb-agent.settings.backup: backups are off (backupDir = null); set services.tb-agent.backupDir to turn them on";
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
          message = "services.tb-agent.openFirewall: needs networking.firewall.enable = true: with the firewall off, nixpkgs drops the rule that limits the agent port to the peer agents and orchestratorNetworks, and the port is open to everyone (set openFirewall = false to filter it yourself)";
        }
      ]
      ++ map
        (secret: {
          assertion = rules.secretPathReason secret.path == null;
          message = "services.tb-agent.${secret.option}: ${toString (rules.secretPathReason secret.path)}";
        })
        secretPaths;

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
      description = "tb-agent beside TigerBeetle replica ${toString replica.replicaIndex}";
      wantedBy = [ "multi-user.target" ];
      wants = [ "network-online.target" ];
      after = [ "network-online.target" ];
      restartTriggers = [ configFile ];
      startLimitIntervalSec = 600;
      startLimitBurst = 10;
      # Type, restart policy, the journal group (the memlock warning), the log directory,
      # capabilities (CAP_IPC_LOCK: `tigerbeetle recover` locks memory, and the agent reads the
      # replica's /proc/<pid>/fd for the StatsD origin check), the syscall filter and the
      # hardening: one list with the Ansible role's, reasons included (nix/units.nix).
      serviceConfig = units.agent // {
        User = replica.user;
        Group = replica.user;
        ExecStartPre = [ "${cfg.package}/bin/tb-agent check-config --config ${configFile}" ];
        ExecStart = "${cfg.package}/bin/tb-agent serve --config ${configFile}";
        ReadWritePaths = [ replica.dataDir ] ++ lib.optional (cfg.backupDir != null) cfg.backupDir;
      };
    };

    networking.firewall.extraInputRules = mkIf (cfg.openFirewall && firewallSources != [ ]) ''
      # tb-agent: peer agents (quorum guard) and orchestrator networks only.
      ip saddr { ${lib.concatStringsSep ", " firewallSources} } tcp dport ${toString listenPort} accept
    '';
  };
}
