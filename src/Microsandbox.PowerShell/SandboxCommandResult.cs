namespace Microsandbox.PowerShell;

/// <summary>What a command did in a sandbox, as Invoke-SandboxCommand -PassThru returns it.</summary>
public sealed class SandboxCommandResult
{
    internal SandboxCommandResult(
        string sandbox, string command, int exitCode, string stdout, string stderr, DateTimeOffset startedAt,
        TimeSpan duration)
    {
        Sandbox = sandbox;
        Command = command;
        ExitCode = exitCode;
        Stdout = stdout;
        Stderr = stderr;
        StartedAt = startedAt;
        Duration = duration;
    }

    /// <summary>The sandbox's name.</summary>
    public string Sandbox { get; }

    /// <summary>The command as given.</summary>
    public string Command { get; }

    /// <summary>The exit code; 128 + n when signal n ended the process.</summary>
    public int ExitCode { get; }

    /// <summary>Whether the exit code is 0.</summary>
    public bool Succeeded => ExitCode == 0;

    /// <summary>Everything written to standard output, as UTF-8 text.</summary>
    public string Stdout { get; }

    /// <summary>Everything written to standard error, as UTF-8 text.</summary>
    public string Stderr { get; }

    /// <summary>When the command was sent.</summary>
    public DateTimeOffset StartedAt { get; }

    /// <summary>How long the command took, from request to exit.</summary>
    public TimeSpan Duration { get; }
}
