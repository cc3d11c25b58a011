using System.Text;
using Microsoft.Win32.SafeHandles;

namespace Microsandbox.Agent;

/// <summary>
/// A pseudo-terminal for a terminal session: the agent keeps the master side, and the command
/// gets the slave as its controlling terminal through msb-exec, the static helper that sets up
/// the session, the terminal and the user in the child before it runs the command.
/// </summary>
internal sealed class PseudoTerminal : IDisposable
{
    private static SafeFileHandle? s_helper;
    private readonly SafeFileHandle _master;

    private PseudoTerminal(SafeFileHandle master, string slavePath)
    {
        _master = master;
        SlavePath = slavePath;
        Output = new FileStream(master, FileAccess.Read, 0);
        Input = new FileStream(master, FileAccess.Write, 0);
    }

    /// <summary>
    /// Where the helper can be run from inside any sandbox root: the agent's own descriptor of it,
    /// opened before the agent entered the root. Null until <see cref="KeepHelper"/> found it.
    /// </summary>
    public static string? HelperPath =>
        s_helper is null ? null : $"/proc/{Environment.ProcessId}/fd/{s_helper.DangerousGetHandle()}";

    /// <summary>The slave's path, such as /dev/pts/0.</summary>
    public string SlavePath { get; }

    /// <summary>What the command writes to its terminal.</summary>
    public FileStream Output { get; }

    /// <summary>What the command reads from its terminal: the host's keystrokes.</summary>
    public FileStream Input { get; }

    /// <summary>Opens the helper while its file is still reachable, before the agent enters the root.</summary>
    public static void KeepHelper(string path)
    {
        if (File.Exists(path))
        {
            s_helper = File.OpenHandle(path, FileMode.Open, FileAccess.Read);
        }
    }

    public static PseudoTerminal Open(int rows, int columns)
    {
        int fd = Native.OpenPseudoTerminal(
            Native.OpenReadWrite | Native.OpenNoControllingTerminal | Native.OpenCloseOnExec);
        if (fd < 0)
        {
            Native.Check(-1, "posix_openpt");
        }

        var master = new SafeFileHandle(fd, ownsHandle: true);
        try
        {
            Native.Check(Native.GrantPseudoTerminal(fd), "grantpt");
            Native.Check(Native.UnlockPseudoTerminal(fd), "unlockpt");
            var name = new byte[128];
            Native.Check(Native.PseudoTerminalName(fd, name, (nuint)name.Length), "ptsname_r");
            string slave = Encoding.UTF8.GetString(name, 0, Array.IndexOf(name, (byte)0));
            var terminal = new PseudoTerminal(master, slave);
            terminal.Resize(rows, columns);
            return terminal;
        }
        catch
        {
            master.Dispose();
            throw;
        }
    }

    /// <summary>Sets the window size; the kernel tells the foreground process group with SIGWINCH.</summary>
    public void Resize(int rows, int columns)
    {
        var size = new Native.WindowSize
        {
            Rows = (ushort)Math.Clamp(rows, 1, ushort.MaxValue),
            Columns = (ushort)Math.Clamp(columns, 1, ushort.MaxValue),
        };
        _ = Native.SetTerminalSize((int)_master.DangerousGetHandle(), Native.SetWindowSize, in size);
    }

    public void Dispose()
    {
        Output.Dispose();
        Input.Dispose();
        _master.Dispose();
    }
}
