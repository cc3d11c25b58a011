using System.Runtime.InteropServices;

namespace Microsandbox.Agent;

/// <summary>The few Linux system calls an init process needs and .NET does not wrap.</summary>
internal static partial class Native
{
    public const ulong MsRdonly = 1;
    public const ulong MsNosuid = 2;
    public const ulong MsNodev = 4;
    public const ulong MsNoexec = 8;
    public const ulong MsBind = 4096;
    public const ulong MsMove = 8192;
    public const int RebootCmdRestart = 0x01234567;
    public const int RebootCmdPowerOff = 0x4321FEDC;
    private const long SysFinitModule = 313;

    [LibraryImport("libc", EntryPoint = "mount", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int Mount(string source, string target, string fstype, ulong flags, string? data);

    [LibraryImport("libc", EntryPoint = "chroot", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int Chroot(string path);

    [LibraryImport("libc", EntryPoint = "chdir", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int Chdir(string path);

    [LibraryImport("libc", EntryPoint = "sync")]
    public static partial void Sync();

    [LibraryImport("libc", EntryPoint = "reboot", SetLastError = true)]
    public static partial int Reboot(int cmd);

    [LibraryImport("libc", EntryPoint = "kill", SetLastError = true)]
    public static partial int Kill(int pid, int signal);

    public const int OpenReadWrite = 2; // O_RDWR
    public const int OpenNoControllingTerminal = 0x100; // O_NOCTTY
    public const int OpenCloseOnExec = 0x80000; // O_CLOEXEC
    public const uint SetWindowSize = 0x5414; // TIOCSWINSZ

    [LibraryImport("libc", EntryPoint = "posix_openpt", SetLastError = true)]
    public static partial int OpenPseudoTerminal(int flags);

    [LibraryImport("libc", EntryPoint = "grantpt", SetLastError = true)]
    public static partial int GrantPseudoTerminal(int fd);

    [LibraryImport("libc", EntryPoint = "unlockpt", SetLastError = true)]
    public static partial int UnlockPseudoTerminal(int fd);

    [LibraryImport("libc", EntryPoint = "ptsname_r", SetLastError = true)]
    public static partial int PseudoTerminalName(int fd, byte[] buffer, nuint length);

    [LibraryImport("libc", EntryPoint = "ioctl", SetLastError = true)]
    public static partial int SetTerminalSize(int fd, uint request, in WindowSize size);

    [LibraryImport("libc", EntryPoint = "chown", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int Chown(string path, int owner, int group);

    [LibraryImport("libc", EntryPoint = "pipe2", SetLastError = true)]
    public static partial int Pipe([Out] int[] descriptors, int flags);

    /// <summary>A copy of a descriptor; unlike the original, it stays open across exec.</summary>
    [LibraryImport("libc", EntryPoint = "dup", SetLastError = true)]
    public static partial int Duplicate(int fd);

    [LibraryImport("libc", EntryPoint = "close", SetLastError = true)]
    public static partial int Close(int fd);

    /// <summary>struct winsize.</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct WindowSize
    {
        public ushort Rows;
        public ushort Columns;
        public ushort XPixels;
        public ushort YPixels;
    }

    [LibraryImport("libc", EntryPoint = "sethostname", SetLastError = true)]
    public static partial int SetHostName(byte[] name, nuint length);

    [LibraryImport("libc", EntryPoint = "syscall", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial long Syscall(long number, int fd, string parameters, int flags);

    [LibraryImport("libc", EntryPoint = "waitid", SetLastError = true)]
    private static partial int WaitId(int idType, int id, byte[] info, int options);

    [LibraryImport("libc", EntryPoint = "waitpid", SetLastError = true)]
    private static partial int WaitPid(int pid, out int status, int options);

    /// <summary>Loads a kernel module from an open file, as modprobe does.</summary>
    public static void LoadModule(SafeHandle file, string parameters)
    {
        bool added = false;
        file.DangerousAddRef(ref added);
        try
        {
            if (Syscall(SysFinitModule, (int)file.DangerousGetHandle(), parameters, 0) != 0)
            {
                int errno = Marshal.GetLastPInvokeError();
                const int EEXIST = 17;
                if (errno != EEXIST)
                {
                    throw new IOException($"finit_module failed: {Marshal.GetPInvokeErrorMessage(errno)}");
                }
            }
        }
        finally
        {
            if (added)
            {
                file.DangerousRelease();
            }
        }
    }

    /// <summary>The pid of an exited child that nobody has collected yet, without collecting it.</summary>
    public static int PeekZombie()
    {
        const int PAll = 0;
        const int WExited = 4;
        const int WNoHang = 1;
        const int WNoWait = 0x01000000;
        var info = new byte[128];
        if (WaitId(PAll, 0, info, WExited | WNoHang | WNoWait) != 0)
        {
            return 0;
        }

        // siginfo_t on 64-bit Linux: si_signo, si_errno, si_code, padding, then the union whose
        // first field for SIGCHLD is si_pid, 8-byte aligned at offset 16.
        return BitConverter.ToInt32(info, 16);
    }

    /// <summary>Collects an exited child.</summary>
    public static void Reap(int pid) => _ = WaitPid(pid, out _, 1);

    public static void Check(int result, string what)
    {
        if (result != 0)
        {
            int errno = Marshal.GetLastPInvokeError();
            throw new IOException($"{what} failed: {Marshal.GetPInvokeErrorMessage(errno)} (errno {errno})");
        }
    }
}
