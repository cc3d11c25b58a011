using System.Runtime.InteropServices;

namespace Microsandbox.PowerShell;

/// <summary>
/// The host's own terminal while Enter-Sandbox runs: put in raw mode, so every key (Ctrl+C
/// included) goes to the guest as the bytes the terminal sends, and read without blocking
/// forever, so the reader stops when the session ends. Unix only.
/// </summary>
internal static partial class HostTerminal
{
    private const int StandardInput = 0;
    private const int StandardOutput = 1;
    private const int SetNow = 0; // TCSANOW
    private const short PollIn = 1; // POLLIN

    /// <summary>Raw mode on standard input until disposed; null when standard input is no terminal.</summary>
    public static IDisposable? EnterRawMode()
    {
        // struct termios is 60 bytes on Linux and 72 on macOS; room for either.
        var saved = new byte[128];
        if (GetAttributes(StandardInput, saved) != 0)
        {
            return null;
        }

        var raw = (byte[])saved.Clone();
        MakeRaw(raw);
        _ = SetAttributes(StandardInput, SetNow, raw);
        return new Restore(saved);
    }

    /// <summary>
    /// Reads what is available on standard input, waiting at most <paramref name="timeoutMs"/>:
    /// the bytes read, an empty array when nothing came in time, or null at end of input.
    /// </summary>
    public static byte[]? Read(int timeoutMs)
    {
        var poll = new PollDescriptor { Descriptor = StandardInput, Events = PollIn };
        int ready = Poll(ref poll, 1, timeoutMs);
        if (ready <= 0)
        {
            return [];
        }

        var buffer = new byte[4096];
        nint n = ReadBytes(StandardInput, buffer, buffer.Length);
        return n <= 0 ? null : buffer[..(int)n];
    }

    /// <summary>
    /// The terminal's size as the kernel has it now: of standard output, else of standard input;
    /// null when neither is a terminal. Asked every time, since a size cached by the console lags
    /// behind the SIGWINCH that announces a new one.
    /// </summary>
    public static (int Rows, int Columns)? WindowSize()
    {
        nuint request = OperatingSystem.IsMacOS() ? 0x40087468u : 0x5413u; // TIOCGWINSZ
        foreach (int fd in new[] { StandardOutput, StandardInput })
        {
            if (GetWindowSize(fd, request, out WindowSizeData size) == 0 && size.Rows > 0 && size.Columns > 0)
            {
                return (size.Rows, size.Columns);
            }
        }

        return null;
    }

    [LibraryImport("libc", EntryPoint = "ioctl")]
    private static partial int GetWindowSize(int fd, nuint request, out WindowSizeData size);

    [LibraryImport("libc", EntryPoint = "tcgetattr")]
    private static partial int GetAttributes(int fd, [Out] byte[] termios);

    [LibraryImport("libc", EntryPoint = "tcsetattr")]
    private static partial int SetAttributes(int fd, int when, [In] byte[] termios);

    [LibraryImport("libc", EntryPoint = "cfmakeraw")]
    private static partial void MakeRaw([In, Out] byte[] termios);

    [LibraryImport("libc", EntryPoint = "poll")]
    private static partial int Poll(ref PollDescriptor descriptors, nuint count, int timeoutMs);

    [LibraryImport("libc", EntryPoint = "read")]
    private static partial nint ReadBytes(int fd, [Out] byte[] buffer, nint count);

    /// <summary>struct winsize.</summary>
    [StructLayout(LayoutKind.Sequential)]
    private struct WindowSizeData
    {
        public ushort Rows;
        public ushort Columns;
        public ushort XPixels;
        public ushort YPixels;
    }

    [StructLayout(LayoutKind.Sequential)]
    private struct PollDescriptor
    {
        public int Descriptor;
        public short Events;
        public short ReturnedEvents;
    }

    private sealed class Restore(byte[] saved) : IDisposable
    {
        public void Dispose() => _ = SetAttributes(StandardInput, SetNow, saved);
    }
}
