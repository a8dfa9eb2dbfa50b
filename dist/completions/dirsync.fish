# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_dirsync_global_optspecs
    string join \n c/config= log-format= v/verbose q/quiet h/help V/version
end

function __fish_dirsync_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_dirsync_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_dirsync_using_subcommand
    set -l cmd (__fish_dirsync_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c dirsync -n "__fish_dirsync_needs_command" -s c -l config -d 'Configuration file' -r -F
complete -c dirsync -n "__fish_dirsync_needs_command" -l log-format -d 'Log format on stderr' -r -f -a "text\t''
json\t''"
complete -c dirsync -n "__fish_dirsync_needs_command" -s v -l verbose -d 'More log detail: -v debug, -vv trace. `DIRSYNC_LOG` (e.g. `dirsync=debug`) overrides'
complete -c dirsync -n "__fish_dirsync_needs_command" -s q -l quiet -d 'No progress display and no progress log events (reports and errors still print)'
complete -c dirsync -n "__fish_dirsync_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c dirsync -n "__fish_dirsync_needs_command" -s V -l version -d 'Print version'
complete -c dirsync -n "__fish_dirsync_needs_command" -f -a "run" -d 'Run as a service: scheduled syncs per [schedule] until SIGTERM (see systemd/)'
complete -c dirsync -n "__fish_dirsync_needs_command" -f -a "plan" -d 'Show what a sync would change, without changing anything (a dry run)'
complete -c dirsync -n "__fish_dirsync_needs_command" -f -a "sync" -d 'Bring the targets in line with the source. With --dry-run, the same as `plan`'
complete -c dirsync -n "__fish_dirsync_needs_command" -f -a "check" -d 'Validate the configuration and show the schedule\'s next three run times; without --offline also open the state store, read the source, and reach each enabled target (authenticate, one read, role names)'
complete -c dirsync -n "__fish_dirsync_needs_command" -f -a "adopt" -d 'Take over existing accounts of a target: match them to source users and record them as managed by dirsync. Changes nothing on the target'
complete -c dirsync -n "__fish_dirsync_needs_command" -f -a "drift" -d 'Compare each target\'s accounts with what dirsync recorded: owned accounts changed by hand (fields, roles, enabled), owned accounts deleted remotely, and accounts dirsync does not own. Reads only: changes nothing on the targets or in the store'
complete -c dirsync -n "__fish_dirsync_needs_command" -f -a "apply" -d 'Apply a plan saved with `dirsync plan --out FILE`: exactly its operations, or nothing if the state, the source or the configuration changed since (or it is older than safety.max_plan_age)'
complete -c dirsync -n "__fish_dirsync_needs_command" -f -a "migrate" -d 'Apply the state store\'s schema migrations'
complete -c dirsync -n "__fish_dirsync_needs_command" -f -a "runs" -d 'List recent runs (real runs first, then dry runs in a section of their own), or show one'
complete -c dirsync -n "__fish_dirsync_needs_command" -f -a "prune" -d 'Delete runs (and their journal rows) that finished longer ago than [state] keep_runs (default 90d). Runs still needed are kept: a running run, one with operations not yet confirmed, and the last good run the safety policy compares against. Accounts are never touched'
complete -c dirsync -n "__fish_dirsync_needs_command" -f -a "generate" -d 'Write the man pages or the shell completions into a directory (for packagers)'
complete -c dirsync -n "__fish_dirsync_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c dirsync -n "__fish_dirsync_using_subcommand run" -s c -l config -d 'Configuration file' -r -F
complete -c dirsync -n "__fish_dirsync_using_subcommand run" -l log-format -d 'Log format on stderr' -r -f -a "text\t''
json\t''"
complete -c dirsync -n "__fish_dirsync_using_subcommand run" -l once -d 'One run, then exit with the run\'s exit code (for systemd timers or cron)'
complete -c dirsync -n "__fish_dirsync_using_subcommand run" -l allow-root -d 'Allow running as root (not recommended: use a dedicated system user)'
complete -c dirsync -n "__fish_dirsync_using_subcommand run" -s v -l verbose -d 'More log detail: -v debug, -vv trace. `DIRSYNC_LOG` (e.g. `dirsync=debug`) overrides'
complete -c dirsync -n "__fish_dirsync_using_subcommand run" -s q -l quiet -d 'No progress display and no progress log events (reports and errors still print)'
complete -c dirsync -n "__fish_dirsync_using_subcommand run" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c dirsync -n "__fish_dirsync_using_subcommand plan" -s t -l target -d 'Only this target (repeatable). Default: every enabled target' -r
complete -c dirsync -n "__fish_dirsync_using_subcommand plan" -s f -l format -d 'Report format' -r -f -a "text\t''
json\t''
markdown\t''"
complete -c dirsync -n "__fish_dirsync_using_subcommand plan" -l out -d 'Also save the plan with its fingerprint, for `dirsync apply FILE` (plans only)' -r -F
complete -c dirsync -n "__fish_dirsync_using_subcommand plan" -s c -l config -d 'Configuration file' -r -F
complete -c dirsync -n "__fish_dirsync_using_subcommand plan" -l log-format -d 'Log format on stderr' -r -f -a "text\t''
json\t''"
complete -c dirsync -n "__fish_dirsync_using_subcommand plan" -s v -l verbose -d 'More log detail: -v debug, -vv trace. `DIRSYNC_LOG` (e.g. `dirsync=debug`) overrides'
complete -c dirsync -n "__fish_dirsync_using_subcommand plan" -s q -l quiet -d 'No progress display and no progress log events (reports and errors still print)'
complete -c dirsync -n "__fish_dirsync_using_subcommand plan" -s h -l help -d 'Print help'
complete -c dirsync -n "__fish_dirsync_using_subcommand sync" -l user -d 'Only this user\'s operations (source key), e.g. to onboard someone now. Percentage thresholds do not apply; lifecycle rules (on_missing) do' -r
complete -c dirsync -n "__fish_dirsync_using_subcommand sync" -s t -l target -d 'Only this target (repeatable). Default: every enabled target' -r
complete -c dirsync -n "__fish_dirsync_using_subcommand sync" -s f -l format -d 'Report format' -r -f -a "text\t''
json\t''
markdown\t''"
complete -c dirsync -n "__fish_dirsync_using_subcommand sync" -l out -d 'Also save the plan with its fingerprint, for `dirsync apply FILE` (plans only)' -r -F
complete -c dirsync -n "__fish_dirsync_using_subcommand sync" -s c -l config -d 'Configuration file' -r -F
complete -c dirsync -n "__fish_dirsync_using_subcommand sync" -l log-format -d 'Log format on stderr' -r -f -a "text\t''
json\t''"
complete -c dirsync -n "__fish_dirsync_using_subcommand sync" -l dry-run -d 'Plan and report only; send nothing to any target'
complete -c dirsync -n "__fish_dirsync_using_subcommand sync" -l force -d 'Apply even if the safety policy blocks the plan (recorded on the run)'
complete -c dirsync -n "__fish_dirsync_using_subcommand sync" -s y -l yes -d 'Apply without showing the plan and asking first (the question is asked only on a terminal)'
complete -c dirsync -n "__fish_dirsync_using_subcommand sync" -l refresh -d 'Plan against the accounts as each target lists them (not as recorded), so changes made by hand to owned accounts are corrected back to the source'
complete -c dirsync -n "__fish_dirsync_using_subcommand sync" -s v -l verbose -d 'More log detail: -v debug, -vv trace. `DIRSYNC_LOG` (e.g. `dirsync=debug`) overrides'
complete -c dirsync -n "__fish_dirsync_using_subcommand sync" -s q -l quiet -d 'No progress display and no progress log events (reports and errors still print)'
complete -c dirsync -n "__fish_dirsync_using_subcommand sync" -s h -l help -d 'Print help'
complete -c dirsync -n "__fish_dirsync_using_subcommand check" -s c -l config -d 'Configuration file' -r -F
complete -c dirsync -n "__fish_dirsync_using_subcommand check" -l log-format -d 'Log format on stderr' -r -f -a "text\t''
json\t''"
complete -c dirsync -n "__fish_dirsync_using_subcommand check" -l offline -d 'Only validate the configuration (no store, no source, no network). Suitable for systemd\'s ExecStartPre'
complete -c dirsync -n "__fish_dirsync_using_subcommand check" -s v -l verbose -d 'More log detail: -v debug, -vv trace. `DIRSYNC_LOG` (e.g. `dirsync=debug`) overrides'
complete -c dirsync -n "__fish_dirsync_using_subcommand check" -s q -l quiet -d 'No progress display and no progress log events (reports and errors still print)'
complete -c dirsync -n "__fish_dirsync_using_subcommand check" -s h -l help -d 'Print help'
complete -c dirsync -n "__fish_dirsync_using_subcommand adopt" -s t -l target -d 'The target whose accounts to adopt' -r
complete -c dirsync -n "__fish_dirsync_using_subcommand adopt" -l match -d 'Match remote accounts to source users by email or by the target\'s login field' -r -f -a "email\t'The source user\'s email and the account\'s email (case-insensitive)'
login\t'The target\'s login field as mapped (Covata email, Primavera loginId, Valuekeep userKey)'"
complete -c dirsync -n "__fish_dirsync_using_subcommand adopt" -s f -l format -d 'Report format' -r -f -a "text\t''
json\t''
markdown\t''"
complete -c dirsync -n "__fish_dirsync_using_subcommand adopt" -s c -l config -d 'Configuration file' -r -F
complete -c dirsync -n "__fish_dirsync_using_subcommand adopt" -l log-format -d 'Log format on stderr' -r -f -a "text\t''
json\t''"
complete -c dirsync -n "__fish_dirsync_using_subcommand adopt" -l dry-run -d 'Show what would be adopted; record nothing'
complete -c dirsync -n "__fish_dirsync_using_subcommand adopt" -s v -l verbose -d 'More log detail: -v debug, -vv trace. `DIRSYNC_LOG` (e.g. `dirsync=debug`) overrides'
complete -c dirsync -n "__fish_dirsync_using_subcommand adopt" -s q -l quiet -d 'No progress display and no progress log events (reports and errors still print)'
complete -c dirsync -n "__fish_dirsync_using_subcommand adopt" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c dirsync -n "__fish_dirsync_using_subcommand drift" -s t -l target -d 'Only this target (repeatable). Default: every enabled target' -r
complete -c dirsync -n "__fish_dirsync_using_subcommand drift" -s f -l format -d 'Report format' -r -f -a "text\t''
json\t''
markdown\t''"
complete -c dirsync -n "__fish_dirsync_using_subcommand drift" -s c -l config -d 'Configuration file' -r -F
complete -c dirsync -n "__fish_dirsync_using_subcommand drift" -l log-format -d 'Log format on stderr' -r -f -a "text\t''
json\t''"
complete -c dirsync -n "__fish_dirsync_using_subcommand drift" -s v -l verbose -d 'More log detail: -v debug, -vv trace. `DIRSYNC_LOG` (e.g. `dirsync=debug`) overrides'
complete -c dirsync -n "__fish_dirsync_using_subcommand drift" -s q -l quiet -d 'No progress display and no progress log events (reports and errors still print)'
complete -c dirsync -n "__fish_dirsync_using_subcommand drift" -s h -l help -d 'Print help'
complete -c dirsync -n "__fish_dirsync_using_subcommand apply" -s f -l format -d 'Report format' -r -f -a "text\t''
json\t''
markdown\t''"
complete -c dirsync -n "__fish_dirsync_using_subcommand apply" -s c -l config -d 'Configuration file' -r -F
complete -c dirsync -n "__fish_dirsync_using_subcommand apply" -l log-format -d 'Log format on stderr' -r -f -a "text\t''
json\t''"
complete -c dirsync -n "__fish_dirsync_using_subcommand apply" -l force -d 'Apply even if the saved plan was blocked by the safety policy (recorded on the run)'
complete -c dirsync -n "__fish_dirsync_using_subcommand apply" -s v -l verbose -d 'More log detail: -v debug, -vv trace. `DIRSYNC_LOG` (e.g. `dirsync=debug`) overrides'
complete -c dirsync -n "__fish_dirsync_using_subcommand apply" -s q -l quiet -d 'No progress display and no progress log events (reports and errors still print)'
complete -c dirsync -n "__fish_dirsync_using_subcommand apply" -s h -l help -d 'Print help'
complete -c dirsync -n "__fish_dirsync_using_subcommand migrate" -s c -l config -d 'Configuration file' -r -F
complete -c dirsync -n "__fish_dirsync_using_subcommand migrate" -l log-format -d 'Log format on stderr' -r -f -a "text\t''
json\t''"
complete -c dirsync -n "__fish_dirsync_using_subcommand migrate" -s v -l verbose -d 'More log detail: -v debug, -vv trace. `DIRSYNC_LOG` (e.g. `dirsync=debug`) overrides'
complete -c dirsync -n "__fish_dirsync_using_subcommand migrate" -s q -l quiet -d 'No progress display and no progress log events (reports and errors still print)'
complete -c dirsync -n "__fish_dirsync_using_subcommand migrate" -s h -l help -d 'Print help'
complete -c dirsync -n "__fish_dirsync_using_subcommand runs; and not __fish_seen_subcommand_from show help" -s n -l limit -d 'How many runs to list (of those the filters select; dry runs included)' -r
complete -c dirsync -n "__fish_dirsync_using_subcommand runs; and not __fish_seen_subcommand_from show help" -l trigger -d 'Only runs of these triggers (repeat or separate with commas): schedule (the daemon), manual (`sync`), dry_run (`plan`), apply (`apply FILE`), user (`sync --user`)' -r -f -a "schedule\t''
manual\t''
dry_run\t''
apply\t'`dirsync apply FILE`: a saved plan applied'
user\t'`dirsync sync --user KEY`: one user\'s operations'"
complete -c dirsync -n "__fish_dirsync_using_subcommand runs; and not __fish_seen_subcommand_from show help" -l status -d 'Only runs with these statuses (repeat or separate with commas)' -r -f -a "running\t''
succeeded\t''
partial\t''
failed\t''
blocked\t''
interrupted\t'Stopped before it finished: a shutdown (SIGTERM) during the run, or a process that died while the run was `running` (found at the next start, its lock no longer held)'"
complete -c dirsync -n "__fish_dirsync_using_subcommand runs; and not __fish_seen_subcommand_from show help" -l since -d 'Only runs started within this duration (7d, 12h) or since this date (2026-12-01, midnight UTC) or time (2026-12-01T08:00:00Z)' -r
complete -c dirsync -n "__fish_dirsync_using_subcommand runs; and not __fish_seen_subcommand_from show help" -s f -l format -d 'Output format' -r -f -a "text\t''
json\t''
markdown\t''"
complete -c dirsync -n "__fish_dirsync_using_subcommand runs; and not __fish_seen_subcommand_from show help" -s c -l config -d 'Configuration file' -r -F
complete -c dirsync -n "__fish_dirsync_using_subcommand runs; and not __fish_seen_subcommand_from show help" -l log-format -d 'Log format on stderr' -r -f -a "text\t''
json\t''"
complete -c dirsync -n "__fish_dirsync_using_subcommand runs; and not __fish_seen_subcommand_from show help" -s v -l verbose -d 'More log detail: -v debug, -vv trace. `DIRSYNC_LOG` (e.g. `dirsync=debug`) overrides'
complete -c dirsync -n "__fish_dirsync_using_subcommand runs; and not __fish_seen_subcommand_from show help" -s q -l quiet -d 'No progress display and no progress log events (reports and errors still print)'
complete -c dirsync -n "__fish_dirsync_using_subcommand runs; and not __fish_seen_subcommand_from show help" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c dirsync -n "__fish_dirsync_using_subcommand runs; and not __fish_seen_subcommand_from show help" -f -a "show" -d 'Show one run: its summary per target and its journaled operations'
complete -c dirsync -n "__fish_dirsync_using_subcommand runs; and not __fish_seen_subcommand_from show help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c dirsync -n "__fish_dirsync_using_subcommand runs; and __fish_seen_subcommand_from show" -s f -l format -d 'Output format' -r -f -a "text\t''
json\t''
markdown\t''"
complete -c dirsync -n "__fish_dirsync_using_subcommand runs; and __fish_seen_subcommand_from show" -s c -l config -d 'Configuration file' -r -F
complete -c dirsync -n "__fish_dirsync_using_subcommand runs; and __fish_seen_subcommand_from show" -l log-format -d 'Log format on stderr' -r -f -a "text\t''
json\t''"
complete -c dirsync -n "__fish_dirsync_using_subcommand runs; and __fish_seen_subcommand_from show" -s v -l verbose -d 'More log detail: -v debug, -vv trace. `DIRSYNC_LOG` (e.g. `dirsync=debug`) overrides'
complete -c dirsync -n "__fish_dirsync_using_subcommand runs; and __fish_seen_subcommand_from show" -s q -l quiet -d 'No progress display and no progress log events (reports and errors still print)'
complete -c dirsync -n "__fish_dirsync_using_subcommand runs; and __fish_seen_subcommand_from show" -s h -l help -d 'Print help'
complete -c dirsync -n "__fish_dirsync_using_subcommand runs; and __fish_seen_subcommand_from help" -f -a "show" -d 'Show one run: its summary per target and its journaled operations'
complete -c dirsync -n "__fish_dirsync_using_subcommand runs; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c dirsync -n "__fish_dirsync_using_subcommand prune" -l keep -d 'Keep runs that finished within this duration instead of [state] keep_runs (at least 1d; e.g. 30d)' -r
complete -c dirsync -n "__fish_dirsync_using_subcommand prune" -s c -l config -d 'Configuration file' -r -F
complete -c dirsync -n "__fish_dirsync_using_subcommand prune" -l log-format -d 'Log format on stderr' -r -f -a "text\t''
json\t''"
complete -c dirsync -n "__fish_dirsync_using_subcommand prune" -s v -l verbose -d 'More log detail: -v debug, -vv trace. `DIRSYNC_LOG` (e.g. `dirsync=debug`) overrides'
complete -c dirsync -n "__fish_dirsync_using_subcommand prune" -s q -l quiet -d 'No progress display and no progress log events (reports and errors still print)'
complete -c dirsync -n "__fish_dirsync_using_subcommand prune" -s h -l help -d 'Print help'
complete -c dirsync -n "__fish_dirsync_using_subcommand generate" -s c -l config -d 'Configuration file' -r -F
complete -c dirsync -n "__fish_dirsync_using_subcommand generate" -l log-format -d 'Log format on stderr' -r -f -a "text\t''
json\t''"
complete -c dirsync -n "__fish_dirsync_using_subcommand generate" -s v -l verbose -d 'More log detail: -v debug, -vv trace. `DIRSYNC_LOG` (e.g. `dirsync=debug`) overrides'
complete -c dirsync -n "__fish_dirsync_using_subcommand generate" -s q -l quiet -d 'No progress display and no progress log events (reports and errors still print)'
complete -c dirsync -n "__fish_dirsync_using_subcommand generate" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c dirsync -n "__fish_dirsync_using_subcommand help; and not __fish_seen_subcommand_from run plan sync check adopt drift apply migrate runs prune generate help" -f -a "run" -d 'Run as a service: scheduled syncs per [schedule] until SIGTERM (see systemd/)'
complete -c dirsync -n "__fish_dirsync_using_subcommand help; and not __fish_seen_subcommand_from run plan sync check adopt drift apply migrate runs prune generate help" -f -a "plan" -d 'Show what a sync would change, without changing anything (a dry run)'
complete -c dirsync -n "__fish_dirsync_using_subcommand help; and not __fish_seen_subcommand_from run plan sync check adopt drift apply migrate runs prune generate help" -f -a "sync" -d 'Bring the targets in line with the source. With --dry-run, the same as `plan`'
complete -c dirsync -n "__fish_dirsync_using_subcommand help; and not __fish_seen_subcommand_from run plan sync check adopt drift apply migrate runs prune generate help" -f -a "check" -d 'Validate the configuration and show the schedule\'s next three run times; without --offline also open the state store, read the source, and reach each enabled target (authenticate, one read, role names)'
complete -c dirsync -n "__fish_dirsync_using_subcommand help; and not __fish_seen_subcommand_from run plan sync check adopt drift apply migrate runs prune generate help" -f -a "adopt" -d 'Take over existing accounts of a target: match them to source users and record them as managed by dirsync. Changes nothing on the target'
complete -c dirsync -n "__fish_dirsync_using_subcommand help; and not __fish_seen_subcommand_from run plan sync check adopt drift apply migrate runs prune generate help" -f -a "drift" -d 'Compare each target\'s accounts with what dirsync recorded: owned accounts changed by hand (fields, roles, enabled), owned accounts deleted remotely, and accounts dirsync does not own. Reads only: changes nothing on the targets or in the store'
complete -c dirsync -n "__fish_dirsync_using_subcommand help; and not __fish_seen_subcommand_from run plan sync check adopt drift apply migrate runs prune generate help" -f -a "apply" -d 'Apply a plan saved with `dirsync plan --out FILE`: exactly its operations, or nothing if the state, the source or the configuration changed since (or it is older than safety.max_plan_age)'
complete -c dirsync -n "__fish_dirsync_using_subcommand help; and not __fish_seen_subcommand_from run plan sync check adopt drift apply migrate runs prune generate help" -f -a "migrate" -d 'Apply the state store\'s schema migrations'
complete -c dirsync -n "__fish_dirsync_using_subcommand help; and not __fish_seen_subcommand_from run plan sync check adopt drift apply migrate runs prune generate help" -f -a "runs" -d 'List recent runs (real runs first, then dry runs in a section of their own), or show one'
complete -c dirsync -n "__fish_dirsync_using_subcommand help; and not __fish_seen_subcommand_from run plan sync check adopt drift apply migrate runs prune generate help" -f -a "prune" -d 'Delete runs (and their journal rows) that finished longer ago than [state] keep_runs (default 90d). Runs still needed are kept: a running run, one with operations not yet confirmed, and the last good run the safety policy compares against. Accounts are never touched'
complete -c dirsync -n "__fish_dirsync_using_subcommand help; and not __fish_seen_subcommand_from run plan sync check adopt drift apply migrate runs prune generate help" -f -a "generate" -d 'Write the man pages or the shell completions into a directory (for packagers)'
complete -c dirsync -n "__fish_dirsync_using_subcommand help; and not __fish_seen_subcommand_from run plan sync check adopt drift apply migrate runs prune generate help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c dirsync -n "__fish_dirsync_using_subcommand help; and __fish_seen_subcommand_from runs" -f -a "show" -d 'Show one run: its summary per target and its journaled operations'
