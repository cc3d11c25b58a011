using System.Diagnostics;
using System.Threading.Channels;
using Microsandbox.Protocol;

namespace Microsandbox.Agent;

/// <summary>One running process and the frames that carry its streams.</summary>
internal sealed class ExecSession : IDisposable
{
    private const int ChunkSize = 64 * 1024;
    private readonly uint _id;
    private readonly Process _process;
    private readonly FrameWriter _writer;
    // Known limit: unbounded until per-session flow control exists; a process that never reads
    // its stdin holds what the host sent in memory.
    private readonly Channel<ReadOnlyMemory<byte>> _stdin = Channel.CreateUnbounded<ReadOnlyMemory<byte>>();

    public ExecSession(uint id, Process process, FrameWriter writer)
    {
        _id = id;
        _process = process;
        _writer = writer;
        Pid = process.Id;
        _ = Task.Run(FeedStdinAsync);
    }

    public int Pid { get; }

    public async Task PumpAsync()
    {
        Task stdout = CopyAsync(_process.StandardOutput.BaseStream, FrameType.Stdout);
        Task stderr = CopyAsync(_process.StandardError.BaseStream, FrameType.Stderr);
        await Task.WhenAll(stdout, stderr).ConfigureAwait(false);
        await _process.WaitForExitAsync().ConfigureAwait(false);
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
    }

    private async Task FeedStdinAsync()
    {
        Stream stdin = _process.StandardInput.BaseStream;
        try
        {
            await foreach (ReadOnlyMemory<byte> data in _stdin.Reader.ReadAllAsync().ConfigureAwait(false))
            {
                if (data.IsEmpty)
                {
                    break;
                }

                await stdin.WriteAsync(data).ConfigureAwait(false);
                await stdin.FlushAsync().ConfigureAwait(false);
            }
        }
        catch (IOException)
        {
            // The process closed its stdin or exited; its output and exit code still follow.
        }
        finally
        {
            stdin.Close();
        }
    }

    /// <summary>Queues bytes for the process's stdin; an empty chunk closes it. Never blocks the channel.</summary>
    public void QueueStdin(ReadOnlyMemory<byte> data) => _stdin.Writer.TryWrite(data);

    public void Signal(int signal) => _ = Native.Kill(Pid, signal);

    private async Task CopyAsync(Stream source, FrameType type)
    {
        var buffer = new byte[ChunkSize];
        int n;
        while ((n = await source.ReadAsync(buffer).ConfigureAwait(false)) > 0)
        {
            await _writer.WriteAsync(_id, type, buffer.AsMemory(0, n)).ConfigureAwait(false);
        }
    }
}
