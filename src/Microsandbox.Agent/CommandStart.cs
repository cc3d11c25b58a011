using System.Diagnostics;
using System.Globalization;
using Microsandbox.Protocol;
using Microsoft.Win32.SafeHandles;

namespace Microsandbox.Agent;

/// <summary>
/// The start of one command. Normally through msb-exec, which puts the child in the command's
/// cgroup, a session of its own, its terminal, its user and its working directory before the
/// program runs, and tells on a status pipe why the program could not start. In a guest without the
/// helper, .NET starts the program itself, on pipes, with the user set and no cgroup.
/// </summary>
internal sealed class CommandStart : IDisposable
{
    /// <summary>The PATH of a command whose environment sets none.</summary>
    public const string DefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

    private const int OpenCloseOnExec = 0x80000; // O_CLOEXEC
    private readonly ExecRequest _request;
    private readonly GuestUser _user;
    private readonly string _directory;
    private readonly string _program;
    private readonly string? _helper;
    private SafeFileHandle? _status;

    public CommandStart(ExecRequest request, GuestUser user, string directory, string program, string? helper)
    {
        _request = request;
        _user = user;
        _directory = directory;
        _program = program;
        _helper = helper;
        if (request.Terminal is { } size)
        {
            Terminal = PseudoTerminal.Open(size.Rows, size.Columns);
            _ = Native.Chown(Terminal.SlavePath, user.Uid, user.Gid);
        }

        Group = helper is null ? null : ControlGroup.Create();
    }

    /// <summary>The command's terminal, or null when it runs on pipes.</summary>
    public PseudoTerminal? Terminal { get; }

    /// <summary>The command's cgroup, or null when the guest has none to give it.</summary>
    public ControlGroup? Group { get; }

    /// <summary>
    /// Starts the process. Call under the agent's spawn lock: the status pipe's writing end is
    /// inheritable while this runs, and no other child may take it along.
    /// </summary>
    public Process Start()
    {
        int statusWriter = -1;
        ProcessStartInfo info = _helper is null ? Direct() : ThroughHelper(_helper, out statusWriter);
        try
        {
            return Process.Start(info)!;
        }
        finally
        {
            if (statusWriter >= 0)
            {
                _ = Native.Close(statusWriter);
            }
        }
    }

    /// <summary>
    /// Waits until the program runs or the helper gave up; returns the step that failed
    /// (user, directory or exec) and its errno, or null when the program runs.
    /// </summary>
    public async Task<(string Step, int Errno)?> ReadFailureAsync()
    {
        if (_status is null)
        {
            return null;
        }

        using var reader = new StreamReader(new FileStream(_status, FileAccess.Read, 1));
        string text = await reader.ReadToEndAsync().ConfigureAwait(false);
        string[] words = text.Split(' ');
        return words.Length == 2 && int.TryParse(words[1], CultureInfo.InvariantCulture, out int errno)
            ? (words[0], errno)
            : null;
    }

    /// <summary>Releases what was made for a process that never started.</summary>
    public void Abandon()
    {
        Terminal?.Dispose();
        Group?.Release();
    }

    /// <summary>Closes the status pipe; the terminal and the cgroup belong to the session.</summary>
    public void Dispose() => _status?.Dispose();

    private ProcessStartInfo ThroughHelper(string helper, out int statusWriter)
    {
        var descriptors = new int[2];
        Native.Check(Native.Pipe(descriptors, OpenCloseOnExec), "pipe2");
        _status = new SafeFileHandle(descriptors[0], ownsHandle: true);
        statusWriter = Native.Duplicate(descriptors[1]);
        _ = Native.Close(descriptors[1]);
        Native.Check(statusWriter < 0 ? -1 : 0, "dup");

        // The helper starts as root, which alone may enter the cgroup and open the helper
        // through the agent's descriptor; it takes the user itself.
        var info = new ProcessStartInfo(helper)
        {
            UseShellExecute = false,
            RedirectStandardInput = Terminal is null,
            RedirectStandardOutput = Terminal is null,
            RedirectStandardError = Terminal is null,
        };
        info.ArgumentList.Add(Terminal?.SlavePath ?? "-");
        info.ArgumentList.Add(Group?.Path ?? "-");
        info.ArgumentList.Add(statusWriter.ToString(CultureInfo.InvariantCulture));
        info.ArgumentList.Add(_directory);
        info.ArgumentList.Add(_user.Uid.ToString(CultureInfo.InvariantCulture));
        info.ArgumentList.Add(_user.Gid.ToString(CultureInfo.InvariantCulture));
        IReadOnlyList<int> groups = _user.Groups("/etc/group");
        info.ArgumentList.Add(groups.Count == 0
            ? "-"
            : string.Join(',', groups.Select(g => g.ToString(CultureInfo.InvariantCulture))));
        info.ArgumentList.Add(_program);
        return WithCommand(info);
    }

    private ProcessStartInfo Direct()
    {
        var info = new ProcessStartInfo(_program)
        {
            WorkingDirectory = _directory,
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        if (_user.Uid != 0)
        {
            // .NET looks the name up again and sets uid, gid and supplementary groups in the child.
            info.UserName = _user.Name;
        }

        return WithCommand(info);
    }

    private ProcessStartInfo WithCommand(ProcessStartInfo info)
    {
        foreach (string arg in _request.Argv.Skip(1))
        {
            info.ArgumentList.Add(arg);
        }

        info.Environment.Clear();
        info.Environment["PATH"] = DefaultPath;
        info.Environment["HOME"] = _user.Home;
        info.Environment["TERM"] = "xterm";
        foreach (var (key, value) in _request.Environment)
        {
            info.Environment[key] = value;
        }

        return info;
    }
}
