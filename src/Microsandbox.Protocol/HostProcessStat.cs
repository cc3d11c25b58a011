namespace Microsandbox.Protocol;

/// <summary>
/// What <c>/proc/PID/stat</c> says of a host process that the engine and the runtime both need:
/// whether it has exited, and when it started, which tells it from a later process that reuses
/// its id.
/// </summary>
/// <param name="State">The state letter (R, S, D, Z for a zombie, X for dead...).</param>
/// <param name="StartTicks">When it started, in clock ticks since boot (field 22).</param>
public readonly record struct HostProcessStat(char State, long StartTicks)
{
    /// <summary>Whether the process has exited: a zombie only lacks its parent's wait.</summary>
    public bool Exited => State is 'Z' or 'X';

    /// <summary>Reads the process's stat; null when there is no such process or it cannot be read.</summary>
    public static HostProcessStat? Read(int pid)
    {
        string stat;
        try
        {
            stat = File.ReadAllText($"/proc/{pid}/stat");
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            return null;
        }

        // The fields after the command name, which may itself hold spaces and parentheses.
        int close = stat.LastIndexOf(')');
        if (close < 0 || close + 2 >= stat.Length)
        {
            return null;
        }

        string[] fields = stat[(close + 2)..].Split(' ');
        return fields.Length > 19 && fields[0].Length == 1 && long.TryParse(fields[19], out long ticks)
            ? new HostProcessStat(fields[0][0], ticks)
            : null;
    }
}
