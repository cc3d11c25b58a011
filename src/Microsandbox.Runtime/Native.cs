using System.Runtime.InteropServices;

namespace Microsandbox.Runtime;

/// <summary>The process-level calls a detached supervisor needs.</summary>
internal static partial class Native
{
    [LibraryImport("libc", EntryPoint = "setsid", SetLastError = true)]
    public static partial int SetSid();

    [LibraryImport("libc", EntryPoint = "open", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int Open(string path, int flags, int mode);

    [LibraryImport("libc", EntryPoint = "dup2", SetLastError = true)]
    private static partial int Dup2(int oldFd, int newFd);

    [LibraryImport("libc", EntryPoint = "close")]
    private static partial int Close(int fd);

    /// <summary>
    /// Leaves the creator's session and terminal, and points the standard streams at the log,
    /// so closing the pwsh that started us neither signals us nor breaks our writes.
    /// </summary>
    public static void Detach(string logPath)
    {
        _ = SetSid();
        const int ORdOnly = 0;
        const int OWrOnly = 1;
        const int OCreat = 0x40;
        const int OAppend = 0x400;
        int devNull = Open("/dev/null", ORdOnly, 0);
        int log = Open(logPath, OWrOnly | OCreat | OAppend, Convert.ToInt32("600", 8));
        if (devNull >= 0)
        {
            _ = Dup2(devNull, 0);
            _ = Close(devNull);
        }

        if (log >= 0)
        {
            _ = Dup2(log, 1);
            _ = Dup2(log, 2);
            _ = Close(log);
        }
    }
}
