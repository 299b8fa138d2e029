# tigerbeetle, tb-agent and tbctl, built from this repository.
#
# tigerbeetle is the release of the agent's embedded client (a client must never be newer than
# the cluster), built from the TigerBeetle source that the crate tigerbeetle-unofficial-sys
# vendors, fetched as the .crate file Cargo.lock names, with Cargo.lock's checksum as its hash (not
# through importCargoLock: its vendor directory holds each crate as a symlink to a read-only store
# path, and stdenv's unpack phase copies the symlink, then fails on `chmod -R u+w` of the store
# path it points to), built with the same flags as
# scripts/tigerbeetle-build. Each value has one source: the release is the one Cargo.lock pins
# for the agent's client, the oldest accepted client is scripts/tigerbeetle-build-release's
# (upstream's), and the commit is the one the crate's build.rs names, read at build time as the
# script does.
{ lib, stdenv, rustPlatform, fetchCrate, installShellFiles, zig_0_14, src }:
let
  lockedSys = builtins.filter (p: p.name == "tigerbeetle-unofficial-sys")
    (builtins.fromTOML (builtins.readFile (src + "/Cargo.lock"))).package;
  # "0.14.28+0.16.78": the crate's version, then the TigerBeetle release it vendors.
  sys =
    if lib.length lockedSys == 1 then lib.head lockedSys
    else throw "nix/packages.nix: Cargo.lock must hold exactly one tigerbeetle-unofficial-sys, found ${toString (lib.length lockedSys)}";
  sysVersion = sys.version;
  release = lib.last (lib.splitString "+" sysVersion);
  clientMinMatch = builtins.match ".*\nrelease_client_min=([0-9]+[.][0-9]+[.][0-9]+)\n.*"
    (builtins.readFile (src + "/scripts/tigerbeetle-build-release"));
  releaseClientMin =
    if clientMinMatch == null
    then throw "nix/packages.nix: no release_client_min=X.Y.Z line in scripts/tigerbeetle-build-release"
    else lib.head clientMinMatch;
  zigTarget = {
    x86_64-linux = "x86_64-linux";
    aarch64-linux = "aarch64-linux";
  }.${stdenv.hostPlatform.system};

  tigerbeetle = stdenv.mkDerivation {
    pname = "tigerbeetle";
    version = release;
    # The whole crate: its build.rs names the upstream commit, its tigerbeetle/ is the source.
    # unpack = false: a fetchurl of the .crate (a gzipped tar, named .tar.gz so stdenv unpacks it
    # into a writable tree), whose sha256 is the checksum Cargo.lock holds.
    src = fetchCrate {
      pname = sys.name;
      version = sysVersion;
      unpack = false;
      sha256 = sys.checksum;
    };
    # Zig itself, not its setup hook's build phases: the phases below are scripts/tigerbeetle-build's.
    nativeBuildInputs = [ zig_0_14 ];
    dontUseZigBuild = true;
    dontUseZigCheck = true;
    dontUseZigInstall = true;
    dontConfigure = true;
    buildPhase = ''
      runHook preBuild
      export ZIG_GLOBAL_CACHE_DIR="$TMPDIR/zig-global-cache"
      commit=$(sed -n 's/^const TIGERBEETLE_COMMIT: &str = "\([0-9a-f]\{40\}\)";$/\1/p' build.rs)
      if [ "''${#commit}" != 40 ]; then
        echo "tigerbeetle: no commit in the crate's build.rs" >&2
        exit 1
      fi
      (cd tigerbeetle && zig build -Drelease -Dtarget=${zigTarget} \
        -Dconfig-release=${release} -Dconfig-release-client-min=${releaseClientMin} \
        "-Dgit-commit=$commit")
      runHook postBuild
    '';
    installPhase = ''
      runHook preInstall
      install -Dm755 tigerbeetle/tigerbeetle "$out/bin/tigerbeetle"
      runHook postInstall
    '';
    doInstallCheck = true;
    # The binary must say it is what the flags asked for (as scripts/tigerbeetle-build-release checks).
    installCheckPhase = ''
      "$out/bin/tigerbeetle" version --verbose >version.txt 2>/dev/null
      grep -qx "process.release=${release}" version.txt
      grep -qx "process.release_client_min=${releaseClientMin}" version.txt
    '';
    meta = {
      description = "TigerBeetle ${release}, built from the source vendored in tigerbeetle-unofficial-sys";
      license = lib.licenses.asl20;
      mainProgram = "tigerbeetle";
      platforms = [ "x86_64-linux" "aarch64-linux" ];
    };
  };

  agentBinaries = rustPlatform.buildRustPackage {
    pname = "tb-agent";
    version = "0.1.0";
    inherit src;
    cargoLock.lockFile = src + "/Cargo.lock";
    nativeBuildInputs = [ zig_0_14 rustPlatform.bindgenHook installShellFiles ];
    dontUseZigBuild = true;
    dontUseZigCheck = true;
    dontUseZigInstall = true;
    # tigerbeetle-unofficial-sys builds the client library with this Zig instead of downloading one.
    ZIG_PATH = "${zig_0_14}/bin/zig";
    TB_CLIENT_DEBUG = "false";
    preBuild = ''
      export ZIG_GLOBAL_CACHE_DIR="$TMPDIR/zig-global-cache"
    '';
    cargoBuildFlags = [ "--bin" "tb-agent" "--bin" "tbctl" ];
    # tbctl's completions and man pages, generated from its clap definitions by the binary just
    # built (hidden commands `tbctl completions SHELL` and `tbctl man --dir`: tbctl.1 and the
    # page of each command it names, tbctl-status.1...); only where the build machine can run it.
    postInstall = lib.optionalString (stdenv.buildPlatform.canExecute stdenv.hostPlatform) ''
      installShellCompletion --cmd tbctl \
        --bash <("$out/bin/tbctl" completions bash) \
        --zsh <("$out/bin/tbctl" completions zsh) \
        --fish <("$out/bin/tbctl" completions fish)
      mkdir tbctl-man
      "$out/bin/tbctl" man --dir tbctl-man
      installManPage tbctl-man/*.1
    '';
    # The tests start real replicas and agents: they run in scripts/test and the VM tests.
    doCheck = false;
    meta = {
      description = "tb-agent, the host agent beside each TigerBeetle replica, and tbctl, the orchestrator";
      license = lib.licenses.asl20;
      platforms = [ "x86_64-linux" "aarch64-linux" ];
    };
  };
in
{
  inherit tigerbeetle;
  # One build, two names: meta is not part of the derivation, so both are the same store path.
  tb-agent = agentBinaries.overrideAttrs (old: { meta = old.meta // { mainProgram = "tb-agent"; }; });
  tbctl = agentBinaries.overrideAttrs (old: { meta = old.meta // { mainProgram = "tbctl"; }; });
}
