using System.Diagnostics;
using System.Threading.Channels;
using Microsandbox.Protocol;

namespace Microsandbox.Agent;

/// <summary>One running process and the frames that carry its streams: pipes, or a terminal.</summary>
internal sealed class ExecSession : IDisposable
{
    private const int ChunkSize = 64 * 1024;
    private readonly uint _id;
    private readonly Process _process;
    private readonly FrameWriter _writer;

    // Bounded by the host's window on a flow-controlled session (the host sends no more stdin
    // than the agent granted); a session without flow control may queue without limit.
    private readonly Channel<ReadOnlyMemory<byte>> _stdin = Channel.CreateUnbounded<ReadOnlyMemory<byte>>();

    // Output credit the host granted; null when the session is not flow-controlled.
    private readonly FlowWindow? _output;

    // The session's terminal, or null when the process runs on pipes.
    private readonly PseudoTerminal? _terminal;

    // Every process of the command, or null in a guest without cgroup2.
    private readonly ControlGroup? _group;

    // Whether the process leads a process group of its own (msb-exec started a session for it).
    private readonly bool _leadsGroup;

    public ExecSession(uint id, Process process, FrameWriter writer, bool flowControl, PseudoTerminal? terminal,
        ControlGroup? group, bool leadsGroup)
    {
        _id = id;
        _process = process;
        _writer = writer;
        _output = flowControl ? new FlowWindow() : null;
        _terminal = terminal;
        _group = group;
        _leadsGroup = leadsGroup;
        Pid = process.Id;
        _ = Task.Run(FeedStdinAsync);
    }

    public int Pid { get; }

    public async Task PumpAsync()
    {
        if (_terminal is null)
        {
            Task stdout = CopyAsync(_process.StandardOutput.BaseStream, FrameType.Stdout);
            Task stderr = CopyAsync(_process.StandardError.BaseStream, FrameType.Stderr);
            await Task.WhenAll(stdout, stderr).ConfigureAwait(false);
            await _process.WaitForExitAsync().ConfigureAwait(false);
        }
        else
        {
            Task output = CopyAsync(_terminal.Output, FrameType.Stdout);
            await _process.WaitForExitAsync().ConfigureAwait(false);

            // The last output is still in the terminal: take what comes within a moment. A process
            // the command left in the background keeps the terminal open; what it writes later is lost.
            await Task.WhenAny(output, Task.Delay(500)).ConfigureAwait(false);
        }

        await _writer.WriteAsync(_id, FrameType.Exited, new ExecExited
        {
            ExitCode = _process.ExitCode,
            Signal = _process.ExitCode > 128 ? _process.ExitCode - 128 : null,
        }).ConfigureAwait(false);
    }

    public void Dispose()
    {
        _stdin.Writer.TryComplete();
        _process.Dispose();
        _terminal?.Dispose();
        _group?.Release();
    }

    private async Task FeedStdinAsync()
    {
        Stream stdin = _terminal?.Input ?? _process.StandardInput.BaseStream;
        bool open = true;
        await foreach (ReadOnlyMemory<byte> data in _stdin.Reader.ReadAllAsync().ConfigureAwait(false))
        {
            if (data.IsEmpty)
            {
                break;
            }

            if (open)
            {
                try
                {
                    await stdin.WriteAsync(data).ConfigureAwait(false);
                    await stdin.FlushAsync().ConfigureAwait(false);
                }
                catch (IOException)
                {
                    // The process closed its stdin or exited (head -n 1): later input is dropped,
                    // as a shell pipe drops it; output and exit code still follow.
                    open = false;
                    stdin.Close();
                }
            }

            if (_output is not null)
            {
                // The bytes are in the process's pipe (or dropped): the host may send as many more.
                await _writer.WriteAsync(_id, FrameType.Window, new WindowUpdate { Bytes = data.Length })
                    .ConfigureAwait(false);
            }
        }

        // A terminal is not closed by the end of input: that would hang it up under the command.
        if (open && _terminal is null)
        {
            try
            {
                stdin.Close();
            }
            catch (IOException)
            {
                // Closing a pipe whose reader has gone fails the final flush; nothing is lost.
            }
        }
    }

    /// <summary>Queues bytes for the process's stdin; an empty chunk closes it. Never blocks the channel.</summary>
    public void QueueStdin(ReadOnlyMemory<byte> data) => _stdin.Writer.TryWrite(data);

    /// <summary>Resizes the session's terminal; a session on pipes has none to resize.</summary>
    public void Resize(TerminalSize size) => _terminal?.Resize(size.Rows, size.Columns);

    /// <summary>Adds output credit the host granted.</summary>
    public void GrantOutput(int bytes) => _output?.Grant(bytes);

    public void Signal(int signal, bool processTree)
    {
        if (!processTree)
        {
            _ = Native.Kill(Pid, signal);
        }
        else
        {
            // The cgroup holds every process of the command, a double-forked one that PID 1 adopted
            // too; the process group and the walk of /proc stand in for it where there is none. The
            // tree is found before any kill, so a child re-parented by its parent's death is not missed.
            HashSet<int> targets = [Pid, .. ProcessTable.DescendantsOf(Pid), .. _group?.Processes() ?? []];
            if (signal == 9)
            {
                _group?.Kill();
            }

            if (_leadsGroup)
            {
                _ = Native.Kill(-Pid, signal);
            }

            foreach (int pid in targets)
            {
                _ = Native.Kill(pid, signal);
            }
        }

        if (signal == 9)
        {
            // The host gave up on the process (Ctrl+C, its client left): what is left unread
            // is dropped rather than waited for, so the session ends.
            _output?.Close();
        }
    }

    private async Task CopyAsync(Stream source, FrameType type)
    {
        var buffer = new byte[ChunkSize];
        int n;
        while ((n = await ReadAsync(source, buffer).ConfigureAwait(false)) > 0)
        {
            for (int sent = 0; sent < n;)
            {
                int granted = _output is null ? n : await _output.TakeAsync(n - sent).ConfigureAwait(false);
                if (granted == 0)
                {
                    // Closed: keep draining the pipe so the process is not blocked writing.
                    break;
                }

                await _writer.WriteAsync(_id, type, buffer.AsMemory(sent, granted)).ConfigureAwait(false);
                sent += granted;
            }
        }
    }

    // A terminal's master reads EIO once the last process holding the terminal has gone: the end.
    private static async ValueTask<int> ReadAsync(Stream source, byte[] buffer)
    {
        try
        {
            return await source.ReadAsync(buffer).ConfigureAwait(false);
        }
        catch (IOException)
        {
            return 0;
        }
    }
}
