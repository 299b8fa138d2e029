# lib.mkCluster ./inventories/prod.json -> nixosConfigurations.<host> for every replica host.
# lib.mkClusterWith { system; modules; hostModules; } ./inventories/prod.json adds the
# operator's own modules: `modules` on every host (users, SSH, monitoring), `hostModules.<name>`
# on one (hardware-configuration.nix, disks).
{ nixpkgs, self }:
let
  inventory = import ./inventory.nix;
  mkClusterWith = { system ? "x86_64-linux", modules ? [ ], hostModules ? { } }: inventoryFile:
    let
      cluster = inventory.fromFile inventoryFile;
    in
    builtins.mapAttrs
      (hostName: _: nixpkgs.lib.nixosSystem {
        inherit system;
        modules = [
          self.nixosModules.replica-host
          { services.tigerbeetle-host = { enable = true; inherit inventoryFile hostName; }; }
        ] ++ modules ++ (hostModules.${hostName} or [ ]);
      })
      cluster.hosts;
in
{
  inherit mkClusterWith;
  mkCluster = mkClusterWith { };
}
