# Stand-in for nixpkgs' services.tigerbeetle (nixos/modules/services/databases/tigerbeetle.nix):
# its option names and types and the unit it defines, so the tests can show that a host
# importing it beside our modules still evaluates (no option or unit name is shared).
{ config, lib, pkgs, ... }:
let
  inherit (lib) mkOption types;
  cfg = config.services.tigerbeetle;
in
{
  options.services.tigerbeetle = {
    enable = mkOption { type = types.bool; default = false; };
    package = mkOption { type = types.package; default = pkgs.tigerbeetle; };
    clusterId = mkOption { type = types.either types.ints.unsigned (types.strMatching "[0-9]+"); default = 0; };
    replicaIndex = mkOption { type = types.ints.unsigned; default = 0; };
    replicaCount = mkOption { type = types.ints.unsigned; default = 1; };
    cacheGridSize = mkOption { type = types.strMatching "[0-9]+(K|M|G)iB"; default = "1GiB"; };
    addresses = mkOption { type = types.listOf types.nonEmptyStr; default = [ "3001" ]; };
  };

  config = lib.mkIf cfg.enable {
    systemd.services.tigerbeetle = {
      description = "TigerBeetle server";
      wantedBy = [ "multi-user.target" ];
      serviceConfig = {
        DynamicUser = true;
        StateDirectory = "tigerbeetle";
        ExecStart = "${cfg.package}/bin/tigerbeetle start --cache-grid=${cfg.cacheGridSize} --addresses=${lib.concatStringsSep "," cfg.addresses} /var/lib/tigerbeetle/${toString cfg.clusterId}_${toString cfg.replicaIndex}.tigerbeetle";
      };
    };
  };
}
