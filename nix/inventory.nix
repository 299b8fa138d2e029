# The inventory logic: `inventories/<env>.json` in, one "resolved cluster" out.
#
# Plain Nix over builtins (no nixpkgs), so it evaluates anywhere, including on machines where
# nixpkgs cannot be fetched, and the same rules are easy to mirror in Rust (`tbctl inventory
# check`). docs/inventory.md is the contract: every key, default and rule, with the exact error
# wording, and the exact JSON of a resolved cluster. Both readers stop at the first error.
#
#   resolve (builtins.fromJSON text)   -> the resolved cluster, or `throw "inventory: <error>"`
#   check   (builtins.fromJSON text)   -> { ok = true; cluster = ...; } or { ok = false; error = "..."; }
#   fromFile ./inventories/prod.json   -> resolve, after a size check
let
  b = builtins;

  # Inventories are small; anything larger is not an inventory (same limit as the Rust reader).
  inventorySizeMaxBytes = 1048576;
  replicaCountMax = 6;
  tokensMax = 16;
  tokenNameLengthMax = 64;
  networksMax = 64;
  # Objects and lists nested deeper are refused (an inventory needs 6 levels): serde_json, under
  # the Rust reader, has a recursion limit of its own (128), and the two readers must agree.
  nestingDepthMax = 32;
  pathLengthMax = 4096;
  u128Max = "340282366920938463463374607431768211455";
  scopes = [ "read" "control" "backup" ];

  # The first non-null element. Elements are evaluated in order and only as far as needed, so a
  # later check may assume that every earlier one passed.
  first = list:
    if b.length list == 0 then null
    else if b.head list != null then b.head list
    else first (b.tail list);

  indexes = list: b.genList (i: i) (b.length list);

  # Keeps the first of each value, in order.
  unique = list: b.foldl' (kept: x: if b.elem x kept then kept else kept ++ [ x ]) [ ] list;

  pow2 = n: if n == 0 then 1 else 2 * pow2 (n - 1);

  # Whether v holds an object or a list nested more than `levels` deep (v itself is level 1).
  # Looks no deeper than needed.
  nestsDeeperThan = levels: v:
    if b.isAttrs v then levels == 0 || b.any (nestsDeeperThan (levels - 1)) (b.attrValues v)
    else if b.isList v then levels == 0 || b.any (nestsDeeperThan (levels - 1)) v
    else false;

  isDecimal = s: b.match "0|[1-9][0-9]*" s != null;

  jsonType = v:
    if b.isString v then "string"
    else if b.isInt v then "integer"
    else if b.isBool v then "boolean"
    else if b.isList v then "array"
    else if b.isAttrs v then "object"
    else if v == null then "null"
    else "number";

  # --- value rules: each returns null (valid) or the reason, worded as in docs/inventory.md ---

  clusterIdReason = v:
    let
      digits = b.stringLength v;
    in
    if !b.isString v || !isDecimal v || digits > 39 || (digits == 39 && v > u128Max)
    then "must be a decimal u128 string without leading zeros, e.g. \"0\""
    else null;

  replicaCountReason = v:
    if b.isInt v && v >= 1 && v <= replicaCountMax then null
    else "must be an integer between 1 and ${toString replicaCountMax}";

  replicaIndexReason = v:
    if b.isInt v && v >= 0 && v < replicaCountMax then null
    else "must be an integer between 0 and ${toString (replicaCountMax - 1)}";

  nonEmptyStringReason = v:
    if b.isString v && v != "" && b.stringLength v <= 253 then null
    else "must be a non-empty string of at most 253 characters";

  cacheGridReason = v:
    if v == null || (b.isString v && b.match "[1-9][0-9]{0,5}(KiB|MiB|GiB|TiB)" v != null) then null
    else "must be null or a size such as \"4GiB\" (digits, then KiB, MiB, GiB or TiB)";

  # Four decimal octets, 0 to 255, without leading zeros: TigerBeetle takes no DNS names, and
  # "010" means 8 to some parsers and 10 to others.
  ipv4Octets = s:
    let
      m = b.match "(0|[1-9][0-9]{0,2})\\.(0|[1-9][0-9]{0,2})\\.(0|[1-9][0-9]{0,2})\\.(0|[1-9][0-9]{0,2})" s;
      octets = if m == null then null else map b.fromJSON m;
    in
    if octets != null && b.all (o: o <= 255) octets then octets else null;

  ipv4ToInt = octets: b.foldl' (acc: o: acc * 256 + o) 0 octets;

  portOf = s: if isDecimal s && b.stringLength s <= 5 && b.fromJSON s >= 1 && b.fromJSON s <= 65535 then b.fromJSON s else null;

  # The replica's data file: `tigerbeetle format` names nothing, this layout does (tb_proto's
  # agent/proto/src/inventory/ computes the same; the differential test in scripts/check-nix compares them).
  # nixos-modules/replica.nix reads it from the resolved inventory (hosts.<name>.data_file).
  dataFile = dir: clusterId: replica: "${dir}/${clusterId}_${toString replica}.tigerbeetle";

  # "IP:port" -> { ip; port; } or null.
  parseSocket = v:
    let
      m = if b.isString v then b.match "([0-9.]+):([0-9]+)" v else null;
      octets = if m == null then null else ipv4Octets (b.elemAt m 0);
      port = if m == null then null else portOf (b.elemAt m 1);
    in
    if octets == null || port == null then null
    else { ip = b.elemAt m 0; inherit port octets; };

  socketReason = v:
    if parseSocket v != null then null
    else "must be IPv4:port, e.g. \"10.0.0.10:3000\" (no DNS names, no leading zeros, port 1 to 65535)";

  parseCidr = v:
    let
      m = if b.isString v then b.match "([0-9.]+)/(0|[1-9][0-9]?)" v else null;
      octets = if m == null then null else ipv4Octets (b.elemAt m 0);
      prefix = if m == null then null else b.fromJSON (b.elemAt m 1);
      hostBits = pow2 (32 - prefix) - 1;
    in
    if octets == null || prefix > 32 || b.bitAnd (ipv4ToInt octets) hostBits != 0 then null
    else { inherit octets prefix; };

  cidrReason = v:
    if parseCidr v != null then null
    else "must be an IPv4 network \"a.b.c.d/n\" with n from 0 to 32 and no bits set after the prefix";

  networksReason = v:
    if !b.isList v || b.length v > networksMax then "must be a list of at most ${toString networksMax} IPv4 networks"
    else first (map (i: let r = cidrReason (b.elemAt v i); in if r == null then null else "[${toString i}]: ${r}") (indexes v));

  pathReason = v:
    let
      components = b.filter (c: b.isString c && c != "") (b.split "/" v);
    in
    if b.isString v
      && b.stringLength v <= pathLengthMax
      && b.match "(/[A-Za-z0-9._+-]+)+" v != null
      && !(b.elem "." components || b.elem ".." components)
    then null
    else "must be an absolute path without \".\" or \"..\" components, trailing \"/\" or characters outside A-Z a-z 0-9 . _ + -";

  # Secrets are world-readable in the Nix store: only their paths may appear here.
  secretPathReason = v:
    let r = pathReason v; in
    if r != null then r
    else if b.substring 0 11 v == "/nix/store/" then "must not be in /nix/store: the store is world-readable; give the path of a file that your secret manager (agenix, sops-nix, ...) writes at runtime"
    else null;

  nullOr = reason: v: if v == null then null else reason v;

  boolReason = v: if b.isBool v then null else "must be null, true or false";

  ledgerReason = v:
    if b.isInt v && v >= 1 && v <= 4294967295 then null
    else "must be null or an integer between 1 and 4294967295 (a ledger no application uses)";

  idPrefixReason = v:
    if b.isString v && b.match "[0-9a-f]{16}" v != null
      && v != "0000000000000000" && v != "ffffffffffffffff"
    then null
    else "must be null or 16 lowercase hex digits, not all 0 and not all f";

  portReason = v:
    if b.isInt v && v >= 1 && v <= 65535 then null else "must be an integer between 1 and 65535";

  parseUrl = v:
    let
      m = if b.isString v then b.match "(https?)://([A-Za-z0-9.-]+|\\[[0-9A-Fa-f:.]+]):([0-9]+)/?" v else null;
      port = if m == null then null else portOf (b.elemAt m 2);
    in
    if m == null || port == null then null
    else { scheme = b.elemAt m 0; host = b.elemAt m 1; inherit port; };

  urlReason = v:
    if parseUrl v != null then null
    else "must be http://HOST:PORT or https://HOST:PORT, with an explicit port and no path";

  tokenReason = i: t:
    let
      at = "[${toString i}]";
      unknown = b.filter (k: !(b.elem k [ "name" "scopes" "sha256" ])) (b.attrNames t);
    in
    if !b.isAttrs t then "${at}: must be an object with name, scopes and sha256"
    else if unknown != [ ] then "${at}.${b.head unknown}: unknown key (a token has name, scopes and sha256)"
    else if !(t ? name) || !b.isString t.name || t.name == "" || b.stringLength t.name > tokenNameLengthMax
    then "${at}.name: must be a string of 1 to ${toString tokenNameLengthMax} characters"
    else if !(t ? scopes) || !b.isList t.scopes || t.scopes == [ ]
      || !b.all (s: b.elem s scopes) t.scopes
      || b.length t.scopes != b.length (b.attrNames (b.listToAttrs (map (s: { name = s; value = null; }) t.scopes)))
    then "${at}.scopes: must be a non-empty list of distinct scopes among \"read\", \"control\", \"backup\""
    else if !(t ? sha256) || !b.isString t.sha256 || b.match "[0-9a-f]{64}" t.sha256 == null
    then "${at}.sha256: must be 64 lowercase hex digits: the SHA-256 of the secret (tb-agent hash-token), never the secret itself"
    else null;

  deployMethods = [ "systemd" "nixos" ];

  deployReason = v:
    if b.isString v && b.elem v deployMethods then null
    else "must be \"systemd\" or \"nixos\"";

  # A flake reference as nixos-rebuild takes it on the host. rollout.yml appends #<host name>, so
  # the reference itself has no "#"; no spaces either (one argv element, no quoting surprises).
  flakeReason = v:
    if b.isString v && b.stringLength v >= 1 && b.stringLength v <= pathLengthMax
      && b.match "[!-\"$-~]+" v != null
    then null
    else "must be null or a flake reference of 1 to ${toString pathLengthMax} printable ASCII characters without spaces or \"#\" (rollout.yml adds #<host name>), e.g. \"/etc/nixos\"";

  tokensReason = v:
    let
      names = map (t: t.name) v;
      duplicate = first (map (i: if b.elem (b.elemAt names i) (b.genList (j: b.elemAt names j) i) then i else null) (indexes v));
    in
    if !b.isList v || b.length v > tokensMax then "must be a list of at most ${toString tokensMax} tokens"
    else
      first [
        (first (map (i: tokenReason i (b.elemAt v i)) (indexes v)))
        (if duplicate != null then "[${toString duplicate}].name: \"${b.elemAt names duplicate}\" is used twice" else null)
      ];

  # --- the keys ---------------------------------------------------------------------------------

  # Cluster-wide keys, in all.vars. A key without `default` is required.
  varsSpec = {
    tigerbeetle_cluster_id = { reason = clusterIdReason; };
    tigerbeetle_replica_count = { reason = replicaCountReason; };
    tigerbeetle_cache_grid = { default = null; reason = cacheGridReason; };
    tigerbeetle_data_dir = { default = "/var/lib/tigerbeetle"; reason = pathReason; };
    tigerbeetle_client_networks = { default = [ ]; reason = networksReason; };
    tb_agent_orchestrator_networks = { default = [ ]; reason = networksReason; };
    tb_agent_statsd_port = { default = 8125; reason = portReason; };
    tb_agent_tokens = { default = [ ]; reason = tokensReason; };
    tb_agent_peer_token_file = { default = "/etc/tb-agent/peer.token"; reason = secretPathReason; };
    tb_agent_peer_ca_file = { default = null; reason = nullOr pathReason; };
    tb_agent_tls_cert_file = { default = null; reason = nullOr pathReason; };
    tb_agent_tls_key_file = { default = null; reason = nullOr secretPathReason; };
    tb_agent_tls_client_ca_file = { default = null; reason = nullOr pathReason; };
    tigerbeetle_nixos_flake = { default = null; reason = nullOr flakeReason; };
    # The maintenance lease's reserved ledger and ids; null: the agent's default (written once,
    # in the agent's config defaults).
    tb_agent_lease_enabled = { default = null; reason = nullOr boolReason; };
    tb_agent_lease_ledger = { default = null; reason = nullOr ledgerReason; };
    tb_agent_lease_id_prefix = { default = null; reason = nullOr idPrefixReason; };
  };

  # Per-host keys, in all.hosts.<name>.
  hostSpec = {
    ansible_host = { reason = nonEmptyStringReason; };
    tigerbeetle_replica = { reason = replicaIndexReason; };
    tigerbeetle_address = { reason = socketReason; };
    tb_agent_url = { reason = urlReason; };
    tb_agent_listen = { default = null; reason = nullOr socketReason; };
    tigerbeetle_deploy = { default = "systemd"; reason = deployReason; };
  };

  isReserved = k: b.match "(tigerbeetle_|tb_agent_).*" k != null;
  # The inventory is copied to every host (0644) and into the store: no secrets (agent/proto/src/inventory/).
  looksSecret = k: b.match ".*(password|passphrase|secret).*|.*_pass" k != null;

  # Unknown reserved keys, keys at the wrong level, missing required keys, then each value.
  levelReason = { at, values, spec, otherSpec, otherLevel }:
    first (
      (map
        (k:
          if !isReserved k && looksSecret k then "${at}.${k}: looks like a secret, and the inventory is copied to every host (0644, and into the Nix store on NixOS): keep secrets out of it (Ansible Vault, a vars file, a secret manager)"
          else if spec ? ${k} || !isReserved k then null
          else if otherSpec ? ${k} then "${at}.${k}: belongs in ${otherLevel}, not here"
          else "${at}.${k}: unknown key (keys starting with tigerbeetle_ or tb_agent_ are reserved for this project: check the spelling)")
        (b.attrNames values))
      ++ (map
        (k:
          if !(values ? ${k}) then (if spec.${k} ? default then null else "${at}.${k}: is required")
          else
          let r = spec.${k}.reason values.${k}; in
          if r == null then null
          else if b.substring 0 1 r == "[" then "${at}.${k}${r}"
          else "${at}.${k}: ${r}")
        (b.attrNames spec))
    );

  withDefaults = spec: values:
    b.mapAttrs (k: s: if values ? ${k} then values.${k} else s.default) spec;

  hostNameReason = name:
    if b.match "[A-Za-z0-9][A-Za-z0-9._-]{0,62}" name != null && b.match "[0-9]+" name == null then null
    else "all.hosts.${name}: host names must be 1 to 63 characters among A-Z a-z 0-9 . _ - , start with a letter or digit and not be all digits (tbctl --replica reads digits as a replica index)";

  # Public IPv4 = not loopback, RFC 1918, shared (100.64/10) or link-local.
  isPrivateIpv4 = octets:
    let
      a = b.elemAt octets 0;
      second = b.elemAt octets 1;
    in
    a == 127 || a == 10
    || (a == 172 && second >= 16 && second <= 31)
    || (a == 192 && second == 168)
    || (a == 100 && second >= 64 && second <= 127)
    || (a == 169 && second == 254);

  check = inventory:
    let
      all = inventory.all;
      rawVars = all.vars;
      rawHosts = all.hosts;
      vars = withDefaults varsSpec rawVars;
      names = b.attrNames rawHosts;
      hosts = b.mapAttrs (_: withDefaults hostSpec) rawHosts;
      count = vars.tigerbeetle_replica_count;
      tls = vars.tb_agent_tls_cert_file != null;

      host = name:
        let
          h = hosts.${name};
          socket = parseSocket h.tigerbeetle_address;
          url = parseUrl h.tb_agent_url;
          listen = if h.tb_agent_listen != null then h.tb_agent_listen else "${socket.ip}:${toString url.port}";
        in
        {
          inherit name url;
          replica = h.tigerbeetle_replica;
          ansible_host = h.ansible_host;
          deploy = h.tigerbeetle_deploy;
          address = h.tigerbeetle_address;
          ip = socket.ip;
          port = socket.port;
          agent_url = "${url.scheme}://${url.host}:${toString url.port}";
          agent_listen = listen;
          agent_listen_socket = parseSocket listen;
          data_file = dataFile vars.tigerbeetle_data_dir vars.tigerbeetle_cluster_id h.tigerbeetle_replica;
        };
      resolvedHosts = map host names;

      # The host holding each replica index, in host name order; the first one wins.
      holder = index: first (map (h: if h.replica == index then h.name else null) resolvedHosts);
      ordered = b.genList (i: b.head (b.filter (h: h.replica == i) resolvedHosts)) count;

      slotReason = h:
        let earlier = first (map (o: if o.name < h.name && o.replica == h.replica then o.name else null) resolvedHosts); in
        if h.replica >= count then "all.hosts.${h.name}.tigerbeetle_replica: ${toString h.replica} is not below the replica count ${toString count}"
        else if earlier != null then "all.hosts.${h.name}.tigerbeetle_replica: replica ${toString h.replica} is already host ${earlier}"
        else null;

      hostReason = h:
        let
          sameAddress = first (map (o: if o.name < h.name && o.address == h.address then o.name else null) resolvedHosts);
        in
        first [
          (if sameAddress != null then "all.hosts.${h.name}.tigerbeetle_address: ${h.address} is also the address of host ${sameAddress}" else null)
          (if tls && h.url.scheme != "https" then "all.hosts.${h.name}.tb_agent_url: must start with https:// because all.vars.tb_agent_tls_cert_file is set" else null)
          (if !tls && h.url.scheme != "http" then "all.hosts.${h.name}.tb_agent_url: must start with http:// because TLS is not configured (all.vars.tb_agent_tls_cert_file)" else null)
          (if h.agent_listen_socket == null then "all.hosts.${h.name}.tb_agent_listen: ${socketReason null}" else null)
          (if h.agent_listen == h.address then "all.hosts.${h.name}.tb_agent_listen: ${h.agent_listen} is the replica's own address" else null)
          (if !tls && !isPrivateIpv4 h.agent_listen_socket.octets
          then "all.hosts.${h.name}.tb_agent_listen: ${h.agent_listen_socket.ip} is a public address and bearer tokens would cross it in clear text: set all.vars.tb_agent_tls_cert_file and all.vars.tb_agent_tls_key_file"
          else null)
          (if h.deploy == "nixos" && vars.tigerbeetle_nixos_flake == null
          then "all.hosts.${h.name}.tigerbeetle_deploy: \"nixos\" needs all.vars.tigerbeetle_nixos_flake (the flake whose nixosConfigurations.<host> rollout.yml builds and activates on this host)"
          else null)
        ];

      error = first [
        (if nestsDeeperThan nestingDepthMax inventory then "the inventory must not nest objects and lists more than ${toString nestingDepthMax} levels deep" else null)
        (if !b.isAttrs inventory then "the inventory must be a JSON object" else null)
        (if !(inventory ? all) || !b.isAttrs inventory.all then "all: must be an object with vars and hosts" else null)
        (if !(all ? vars) || !b.isAttrs rawVars then "all.vars: must be an object" else null)
        (if !(all ? hosts) || !b.isAttrs rawHosts then "all.hosts: must be an object" else null)
        (levelReason { at = "all.vars"; values = rawVars; spec = varsSpec; otherSpec = hostSpec; otherLevel = "all.hosts.<name>"; })
        (first (map hostNameReason names))
        (first (map
          (name:
            if !b.isAttrs rawHosts.${name} then "all.hosts.${name}: must be an object"
            else levelReason { at = "all.hosts.${name}"; values = rawHosts.${name}; spec = hostSpec; otherSpec = varsSpec; otherLevel = "all.vars"; })
          names))
        (if vars.tb_agent_tls_key_file != null && !tls then "all.vars.tb_agent_tls_key_file: needs all.vars.tb_agent_tls_cert_file" else null)
        (if tls && vars.tb_agent_tls_key_file == null then "all.vars.tb_agent_tls_cert_file: needs all.vars.tb_agent_tls_key_file" else null)
        (if vars.tb_agent_tls_client_ca_file != null && !tls then "all.vars.tb_agent_tls_client_ca_file: needs all.vars.tb_agent_tls_cert_file and all.vars.tb_agent_tls_key_file" else null)
        (first (map slotReason resolvedHosts))
        (first (b.genList (i: if holder i == null then "all.hosts: no host has tigerbeetle_replica ${toString i}" else null) count))
        (first (map hostReason resolvedHosts))
      ];

      cluster = {
        cluster_id = vars.tigerbeetle_cluster_id;
        replica_count = count;
        addresses = map (h: h.address) ordered;
        replica_hosts = map (h: h.name) ordered;
        cache_grid = vars.tigerbeetle_cache_grid;
        data_dir = vars.tigerbeetle_data_dir;
        client_networks = vars.tigerbeetle_client_networks;
        orchestrator_networks = vars.tb_agent_orchestrator_networks;
        nixos_flake = vars.tigerbeetle_nixos_flake;
        lease = {
          enabled = vars.tb_agent_lease_enabled;
          id_prefix = vars.tb_agent_lease_id_prefix;
          ledger = vars.tb_agent_lease_ledger;
        };
        statsd_port = vars.tb_agent_statsd_port;
        agent_urls = map (h: h.agent_url) ordered;
        agent_tokens = map (t: { inherit (t) name scopes sha256; }) vars.tb_agent_tokens;
        agent_peer_token_file = vars.tb_agent_peer_token_file;
        agent_peer_ca_file = vars.tb_agent_peer_ca_file;
        agent_tls =
          if tls then {
            cert_file = vars.tb_agent_tls_cert_file;
            key_file = vars.tb_agent_tls_key_file;
            client_ca_file = vars.tb_agent_tls_client_ca_file;
          } else null;
        hosts = b.listToAttrs (map
          (h: {
            name = h.name;
            value = {
              inherit (h) replica ansible_host address ip port agent_url agent_listen data_file deploy;
              agent_port = h.agent_listen_socket.port;
              agent_ip = h.agent_listen_socket.ip;
              peer_ips = unique (b.filter (ip: ip != h.ip) (map (o: o.ip) ordered));
            };
          })
          resolvedHosts);
      };
    in
    if error == null then { ok = true; inherit cluster; } else { ok = false; inherit error; };

  resolve = inventory:
    let result = check inventory; in
    if result.ok then result.cluster else throw "inventory: ${result.error}";

  fromFile = path:
    let text = b.readFile path; in
    if b.stringLength text > inventorySizeMaxBytes
    then throw "inventory: larger than ${toString inventorySizeMaxBytes} bytes"
    # Nix strings end at a NUL character: fromJSON would give a shortened key or value where the
    # Rust reader sees the whole one. Both readers refuse the escape instead.
    else if b.replaceStrings [ "\\u0000" ] [ "" ] text != text
    then throw "inventory: the inventory must not contain \\u0000: Nix strings cannot hold NUL characters"
    else resolve (b.fromJSON text);
in
{
  inherit check resolve fromFile;
  # For the agent module's assertion on its backup directory (a host option, not in the
  # inventory); everything else the modules read is the resolved inventory.
  rules = {
    inherit pathReason;
  };
}
