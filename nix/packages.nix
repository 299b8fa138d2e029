# tigerbeetle, tb-agent and tbctl, built from this repository.
#
# tigerbeetle is the release of the agent's embedded client (0.16.78; a client must never be
# newer than the cluster), built from the TigerBeetle source that the crate
# tigerbeetle-unofficial-sys vendors, fetched through Cargo.lock so its hash is the one there,
# with the same flags as scripts/tigerbeetle-build.
{ lib, stdenv, rustPlatform, zig_0_14, src }:
let
  release = "0.16.78";
  commit = "c3d9b09dc88e94dde9ac915c6e94a4c650332080";
  sysCrate = "tigerbeetle-unofficial-sys-0.14.28+${release}";
  vendored = rustPlatform.importCargoLock { lockFile = src + "/Cargo.lock"; };
  zigTarget = {
    x86_64-linux = "x86_64-linux";
    aarch64-linux = "aarch64-linux";
  }.${stdenv.hostPlatform.system};

  tigerbeetle = stdenv.mkDerivation {
    pname = "tigerbeetle";
    version = release;
    src = "${vendored}/${sysCrate}/tigerbeetle";
    # Zig itself, not its setup hook's build phases: the phases below are scripts/tigerbeetle-build's.
    nativeBuildInputs = [ zig_0_14 ];
    dontUseZigBuild = true;
    dontUseZigCheck = true;
    dontUseZigInstall = true;
    dontConfigure = true;
    buildPhase = ''
      runHook preBuild
      export ZIG_GLOBAL_CACHE_DIR="$TMPDIR/zig-global-cache"
      zig build -Drelease -Dtarget=${zigTarget} \
        -Dconfig-release=${release} -Dconfig-release-client-min=${release} \
        -Dgit-commit=${commit}
      runHook postBuild
    '';
    installPhase = ''
      runHook preInstall
      install -Dm755 tigerbeetle "$out/bin/tigerbeetle"
      runHook postInstall
    '';
    doInstallCheck = true;
    installCheckPhase = ''
      "$out/bin/tigerbeetle" version | grep -F ${release}
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
    nativeBuildInputs = [ zig_0_14 rustPlatform.bindgenHook ];
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
