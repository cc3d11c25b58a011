using System.Diagnostics;
using Microsandbox.Protocol;

namespace Microsandbox.Agent;

/// <summary>One running process and the frames that carry its streams.</summary>
internal sealed class ExecSession : IDisposable
{
    private const int ChunkSize = 64 * 1024;
    private readonly uint _id;
    private readonly Process _process;
    private readonly FrameWriter _writer;
    private readonly SemaphoreSlim _stdinLock = new(1, 1);
    private bool _stdinClosed;

    public ExecSession(uint id, Process process, FrameWriter writer)
    {
        _id = id;
        _process = process;
        _writer = writer;
        Pid = process.Id;
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
        _process.Dispose();
        _stdinLock.Dispose();
    }

    public async Task WriteStdinAsync(ReadOnlyMemory<byte> data)
    {
        await _stdinLock.WaitAsync().ConfigureAwait(false);
        try
        {
            if (_stdinClosed)
            {
                return;
            }

            Stream stdin = _process.StandardInput.BaseStream;
            if (data.IsEmpty)
            {
                _stdinClosed = true;
                stdin.Close();
                return;
            }

            await stdin.WriteAsync(data).ConfigureAwait(false);
            await stdin.FlushAsync().ConfigureAwait(false);
        }
        catch (IOException)
        {
            // The process closed its stdin or exited; its output and exit code still follow.
            _stdinClosed = true;
        }
        finally
        {
            _stdinLock.Release();
        }
    }

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
