// The agent's user may start, stop and restart the replica unit, and reset its failed state (a
// unit at its start limit refuses a start until then: the agent resets it when an operator asks
// for a start or restart); every other systemd action stays denied (polkit's default for a
// system user without a session). The one copy of the rule: the tb_agent role and
// nixos-modules/agent.nix put the replica's user and unit, as JSON strings, for the two
// at-sign placeholders below.
polkit.addRule(function(action, subject) {
    if (action.id == "org.freedesktop.systemd1.manage-units" &&
        subject.user == @USER@ &&
        action.lookup("unit") == @UNIT@) {
        var verb = action.lookup("verb");
        if (verb == "start" || verb == "stop" || verb == "restart" || verb == "reset-failed") {
            return polkit.Result.YES;
        }
    }
});
