{
  description = "TigerBeetle on bare metal: replicas, tb-agent and tbctl from one inventory";

  # A stable branch. The committed flake.lock pins nixos-25.11 at the revision recorded in the
  # public repository Misterio77/nix-starter-configs (standard/flake.lock): rev
  # 10e7ad5bbcb421fe07e3a4ad53a634b0cd57ffac, lastModified 1776734388. The owner is spelt
  # "nixos" as in that lock's `original`, so Nix uses the lock instead of re-locking.
  inputs.nixpkgs.url = "github:nixos/nixpkgs/nixos-25.11";

  outputs = { self, nixpkgs }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forSystems = f: builtins.listToAttrs (map (system: { name = system; value = f system; }) systems);

      # Machines without nixpkgs (this repository's own test machine) override the input with
      # nixpkgs' lib alone (scripts/check-nix). Then only the outputs that need no packages
      # exist: lib and nixosModules. Everywhere else, everything is here.
      hasPackages = nixpkgs ? legacyPackages;
      pkgsFor = system: nixpkgs.legacyPackages.${system};

      # Modules with a `key` are imported once however many of ours a host imports. The replica's
      # unit runs `tb-agent replica-start`, so the replica module needs the tb-agent package too.
      replicaPackageDefault = { pkgs, lib, ... }: {
        key = "tb-bare-metal/replica-package-default";
        config.services.tigerbeetle-replica = {
          package = lib.mkDefault self.packages.${pkgs.stdenv.hostPlatform.system}.tigerbeetle;
          agentPackage = lib.mkDefault self.packages.${pkgs.stdenv.hostPlatform.system}.tb-agent;
        };
      };
      agentPackageDefault = { pkgs, lib, ... }: {
        key = "tb-bare-metal/agent-package-default";
        config.services.tb-agent.package = lib.mkDefault self.packages.${pkgs.stdenv.hostPlatform.system}.tb-agent;
      };

      # The example inventory's hosts, with placeholder hardware so that `nix flake check`
      # evaluates them; real hosts pass their hardware-configuration.nix through mkClusterWith.
      exampleHardware = {
        boot.loader.grub.devices = [ "nodev" ];
        fileSystems."/" = { device = "/dev/disk/by-label/nixos"; fsType = "ext4"; };
        system.stateVersion = "25.11";
      };
    in
    {
      lib = {
        inventory = import ./nix/inventory.nix;
      } // (if hasPackages then import ./nix/mk-cluster.nix { inherit nixpkgs self; } else { });

      nixosModules = {
        replica = { imports = [ ./nixos-modules/replica.nix replicaPackageDefault ]; };
        agent = { imports = [ ./nixos-modules/agent.nix replicaPackageDefault agentPackageDefault ]; };
        replica-host = { imports = [ ./nixos-modules/replica-host.nix replicaPackageDefault agentPackageDefault ]; };
        default = self.nixosModules.replica-host;
      };
    } // (if !hasPackages then { } else {
      packages = forSystems (system:
        let
          pkgs = pkgsFor system;
          built = import ./nix/packages.nix { inherit (pkgs) lib stdenv rustPlatform fetchCrate installShellFiles zig_0_14; src = self; };
        in
        built // { default = built.tb-agent; });

      formatter = forSystems (system: (pkgsFor system).nixpkgs-fmt);

      checks = forSystems (system:
        let
          pkgs = pkgsFor system;
        in
        import ./nix/vm-tests.nix { inherit pkgs self; } // {
          formatting = pkgs.runCommand "nixpkgs-fmt-check" { nativeBuildInputs = [ pkgs.nixpkgs-fmt ]; } ''
            cd ${self}
            nixpkgs-fmt --check .
            touch "$out"
          '';
        });

      nixosConfigurations = self.lib.mkClusterWith { modules = [ exampleHardware ]; } ./inventories/example.json;
    });
}
