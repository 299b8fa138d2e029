# Excerpts transcribed verbatim from nixpkgs: nixos/modules/virtualisation/qemu-vm.nix (MIT
# licence, Copyright (c) 2003-2025 Eelco Dolstra and the Nixpkgs/NixOS contributors; see nixpkgs'
# COPYING). Revision read: 00008e8eb762c5def2670c20231de50db9bb75b3 (flake.lock pins
# 10e7ad5bbcb4, nixos-25.11, which could not be read here; this is the nearest readable revision).
# The whole module needs the rest of nixpkgs; these parts run alone. Ours: this header, the
# function head and the `options = {`/`config = {` wrappers. nixpkgs': the memorySize option,
# the import of ./disk-size-option.nix, and the one config line on the disk size (qemu-vm.nix
# creates the root disk as an ext4 image of "${toString cfg.diskSize}M", so "auto" is refused).
{ lib, ... }:
with lib;
{
  imports = [
    ./disk-size-option.nix
  ];

  options = {
    virtualisation.memorySize = mkOption {
      type = types.ints.positive;
      default = 1024;
      description = ''
        The memory size of the virtual machine in MiB (1024×1024 bytes).
      '';
    };
  };

  config = {
    virtualisation.diskSizeAutoSupported = false;
  };
}
