# A replica host: the replica and its agent, configured from the one inventory, plus the host
# settings TigerBeetle wants (time sync, io_uring allowed, socket buffers, no swap).
#
#   services.tigerbeetle-host = { enable = true; inventoryFile = ./inventories/prod.json; hostName = "tb-0"; };
#
# lib.mkCluster does this for every host of an inventory.
{ config, lib, options, ... }:
let
  inherit (lib) mkOption mkIf mkDefault types;
  cfg = config.services.tigerbeetle-host;
  inventory = import ../nix/inventory.nix;
  cluster = inventory.fromFile cfg.inventoryFile;
  hostKnown = cluster.hosts ? ${cfg.hostName};
  swapOn = config.swapDevices != [ ] || config.zramSwap.enable;
  # The inventory's host name (tb-0, or an FQDN tb-0.dc1.example.net) is this host's name:
  # networking.hostName its first label, networking.domain the rest. Every label is checked with
  # nixpkgs' own type of networking.hostName (one DNS label), so a name it refuses gets our
  # assertion below instead of a type error about the option.
  nameLabels = lib.splitString "." cfg.hostName;
  shortName = lib.head nameLabels;
  domain = if lib.length nameLabels > 1 then lib.concatStringsSep "." (lib.tail nameLabels) else null;
  hostNameFits = lib.all (label: label != "" && options.networking.hostName.type.check label) nameLabels;
  hostNameKept = config.networking.hostName == shortName && (domain == null || config.networking.domain == domain);
in
{
  imports = [ ./replica.nix ./agent.nix ];

  options.services.tigerbeetle-host = {
    enable = mkOption {
      type = types.bool;
      default = false;
      description = "Whether this host runs a TigerBeetle replica and its agent, with TigerBeetle's host settings.";
    };
    inventoryFile = mkOption {
      type = types.path;
      description = "The inventory (inventories/<env>.json, docs/inventory.md): the replica and its agent read it at start (services.tigerbeetle-replica.inventoryFile).";
    };
    hostName = mkOption {
      type = types.str;
      description = "This host's name under all.hosts in the inventory.";
    };
  };

  config = mkIf cfg.enable (lib.mkMerge [
    {
      assertions = [
        {
          assertion = !hostKnown || hostNameFits;
          message = "services.tigerbeetle-host.hostName: \"${cfg.hostName}\" cannot name this host: NixOS takes each of its dot-separated labels as a DNS label (networking.hostName: ${options.networking.hostName.type.description}; letters, digits, - and _, 1 to 63, not starting or ending with - or _). Rename the host in the inventory";
        }
        {
          assertion = !hostKnown || !hostNameFits || hostNameKept;
          message = "networking.hostName: this host is named \"${config.networking.hostName}${lib.optionalString (config.networking.domain != null) ".${config.networking.domain}"}\" but the inventory names it \"${cfg.hostName}\" (services.tigerbeetle-host.hostName). One name per host: `nixos-rebuild --flake <flake>` without #<name> builds nixosConfigurations.<hostname>. Remove the setting or rename the host in the inventory";
        }
        {
          assertion = config.services.timesyncd.enable || config.services.chrony.enable || config.services.ntp.enable;
          message = "services.tigerbeetle-host: a replica host needs time sync (services.timesyncd, chrony or ntp): TigerBeetle's cluster clock refuses replicas whose clocks drift apart";
        }
      ];

      warnings = lib.optional swapOn
        "services.tigerbeetle-host: swap is on. TigerBeetle locks its memory, but other processes swapping under memory pressure can still stall the host; replica hosts should run without swap.";

      services.timesyncd.enable = mkDefault true;
      networking.firewall.enable = mkDefault true;
      networking.nftables.enable = mkDefault true;

      boot.kernel.sysctl = {
        # Hardened profiles disable io_uring; TigerBeetle does all its I/O through it.
        "kernel.io_uring_disabled" = mkDefault 0;
        # TigerBeetle asks for 4 MiB receive buffers and up to 16 MiB send buffers
        # (constants.tcp_rcvbuf, tcp_sndbuf_replica); without CAP_NET_ADMIN the kernel caps them here.
        # Plain definitions, not mkDefault: nixpkgs merges these two by the highest value among
        # the definitions of the highest priority, so a mkDefault would lose to any module's
        # lower value; plain, another module can only raise them (or lower them with mkForce).
        "net.core.rmem_max" = 4194304;
        "net.core.wmem_max" = 16777216;
      };

      services.tigerbeetle-replica = { enable = true; inherit (cfg) inventoryFile hostName; };
      services.tb-agent.enable = true;
    }
    (mkIf hostKnown {
      # The inventory names the host. mkDefault: a host that sets networking.hostName itself
      # meets the assertion above if the names differ, not a conflict between two definitions.
      networking.hostName = mkIf hostNameFits (mkDefault shortName);
      networking.domain = mkIf (hostNameFits && domain != null) (mkDefault domain);
    })
  ]);
}
