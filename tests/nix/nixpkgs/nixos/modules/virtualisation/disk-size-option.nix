# Transcribed verbatim from nixpkgs: nixos/modules/virtualisation/disk-size-option.nix (MIT
# licence, Copyright (c) 2003-2025 Eelco Dolstra and the Nixpkgs/NixOS contributors; see nixpkgs'
# COPYING). Revision read: 34b62f7c47d9e11cf95b01473e9a380e9d331a6d. flake.lock pins 10e7ad5bbcb4
# (nixos-25.11), which could not be read here (no network; the stored copy of nixpkgs holds this
# file only at 34b62f7c): this is the nearest readable revision. Only these header lines are
# ours. qemu-vm.nix imports it; tests/nix/vm-test-scripts.nix evaluates the VM nodes with it.
{ lib, config, ... }:
let
  t = lib.types;
in
{
  options = {
    virtualisation.diskSizeAutoSupported = lib.mkOption {
      type = t.bool;
      default = true;
      description = ''
        Whether the current image builder or vm runner supports `virtualisation.diskSize = "auto".`
      '';
      internal = true;
    };

    virtualisation.diskSize = lib.mkOption {
      type = t.either (t.enum [ "auto" ]) t.ints.positive;
      default = if config.virtualisation.diskSizeAutoSupported then "auto" else 1024;
      defaultText = "\"auto\" if diskSizeAutoSupported, else 1024";
      description = ''
        The disk size in megabytes of the virtual machine.
      '';
    };
  };

  config =
    let
      inherit (config.virtualisation) diskSize diskSizeAutoSupported;
    in
    {
      assertions = [
        {
          assertion = diskSize != "auto" || diskSizeAutoSupported;
          message = "Setting virtualisation.diskSize to `auto` is not supported by the current image build or vm runner; use an explicit size.";
        }
      ];
    };
}
