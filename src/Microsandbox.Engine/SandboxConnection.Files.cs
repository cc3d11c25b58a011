using Microsandbox.Protocol;

namespace Microsandbox.Engine;

/// <summary>Reads and writes bytes of a file: a source fills the buffer and says how much, 0 at the end.</summary>
public delegate ValueTask<int> FileSource(Memory<byte> buffer, CancellationToken cancellationToken);

/// <summary>Takes bytes of a file as they arrive; the next chunk waits until this one is taken.</summary>
public delegate ValueTask FileSink(ReadOnlyMemory<byte> data, CancellationToken cancellationToken);

/// <summary>File operations in the guest, one session each, done by the agent itself.</summary>
public sealed partial class SandboxConnection
{
    private const int FileChunkSize = 128 * 1024;

    /// <summary>Whether the guest's agent does file operations (the <c>files</c> capability).</summary>
    public bool SupportsFiles => Hello.Capabilities.Contains("files");

    /// <summary>The entry of <paramref name="path"/>, or null when nothing is there.</summary>
    public async Task<FileEntry?> StatAsync(string path, bool followLinks, CancellationToken cancellationToken)
    {
        try
        {
            FileResult result = await FileSessionAsync(new FileRequest
            {
                Op = FileOperation.Stat, Path = path, FollowLinks = followLinks,
            }, path, null, null, cancellationToken).ConfigureAwait(false);
            return result.Entry;
        }
        catch (SandboxException ex) when (ex.ErrorId == "SandboxPathNotFound")
        {
            return null;
        }
    }

    /// <summary>The entries of a directory (a link to one is followed), in the order the guest read them.</summary>
    public async Task<IReadOnlyList<FileEntry>> ListAsync(string path, CancellationToken cancellationToken)
    {
        var entries = new List<FileEntry>();
        await FileSessionAsync(new FileRequest { Op = FileOperation.List, Path = path }, path, null,
            (frame, _) =>
            {
                entries.AddRange(frame.Read<FileEntries>().Entries);
                return ValueTask.CompletedTask;
            }, cancellationToken).ConfigureAwait(false);
        return entries;
    }

    /// <summary>
    /// Reads a file (a link to one is followed) into <paramref name="sink"/>, which gets the bytes as
    /// they arrive; the guest sends more only as the sink takes them. Returns the file's entry.
    /// </summary>
    public async Task<FileEntry> ReadFileAsync(string path, FileSink sink, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(sink);
        FileResult result = await FileSessionAsync(new FileRequest { Op = FileOperation.Read, Path = path }, path,
            null, async (frame, token) =>
            {
                if (frame.Type == FrameType.FileData)
                {
                    await sink(frame.Payload, token).ConfigureAwait(false);
                }
            }, cancellationToken).ConfigureAwait(false);
        return result.Entry ?? new FileEntry();
    }

    /// <summary>
    /// Writes a file from <paramref name="source"/>, as much at a time as the guest grants, with the
    /// mode, owner and time of <paramref name="request"/> (whose op must be write). Returns the new entry.
    /// </summary>
    public async Task<FileEntry> WriteFileAsync(
        FileRequest request, FileSource source, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(request);
        ArgumentNullException.ThrowIfNull(source);
        FileResult result = await FileSessionAsync(request, request.Path, source, null, cancellationToken)
            .ConfigureAwait(false);
        return result.Entry ?? new FileEntry();
    }

    /// <summary>An operation without data (mkdir, symlink, remove, setattr, stat): the entry after it.</summary>
    public async Task<FileEntry?> FileOperationAsync(FileRequest request, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(request);
        FileResult result = await FileSessionAsync(request, request.Path, null, null, cancellationToken)
            .ConfigureAwait(false);
        return result.Entry;
    }

    // One file session: sends the request, feeds the source (if any) within the guest's window,
    // hands FileEntries and FileData to the consumer and grants the guest more as it consumes.
    private async Task<FileResult> FileSessionAsync(
        FileRequest request,
        string target,
        FileSource? source,
        Func<Frame, CancellationToken, ValueTask>? consume,
        CancellationToken cancellationToken)
    {
        uint session = _nextSession;
        _nextSession += 2;
        await _writer.WriteAsync(session, FrameType.FileRequest, request, cancellationToken).ConfigureAwait(false);
        using var kill = cancellationToken.Register(() => KillTree(session));
        var window = new FlowWindow();
        using var sessionEnd = new CancellationTokenSource();
        var feeder = source is null ? null : new FileFeeder(this, session, source, window);
        Task feeding = feeder?.RunAsync(sessionEnd.Token) ?? Task.CompletedTask;
        int consumed = 0;
        try
        {
            while (true)
            {
                if (consumed >= FlowWindow.GrantThreshold)
                {
                    await _writer.WriteAsync(session, FrameType.Window, new WindowUpdate { Bytes = consumed },
                        cancellationToken).ConfigureAwait(false);
                    consumed = 0;
                }

                Frame frame = await NextFrameAsync(session, target, cancellationToken).ConfigureAwait(false);
                switch (frame.Type)
                {
                    case FrameType.FileData or FrameType.FileEntries when consume is not null:
                        await consume(frame, cancellationToken).ConfigureAwait(false);
                        consumed += frame.Payload.Length;
                        break;
                    case FrameType.Window:
                        window.Grant(frame.Read<WindowUpdate>().Bytes);
                        break;
                    case FrameType.FileResult:
                        return frame.Read<FileResult>();
                    case FrameType.Error or FrameType.ExecFailed:
                        // A source that failed cancelled the session: its own error is the one to report.
                        feeder?.Failure?.Throw();
                        throw FileError(frame.Read<ErrorMessage>(), target);
                    default:
                        break;
                }
            }
        }
        finally
        {
            await sessionEnd.CancelAsync().ConfigureAwait(false);
            window.Close();
            await feeding.ConfigureAwait(false);
        }
    }

    /// <summary>The engine's error for a file operation the guest refused.</summary>
    private static SandboxException FileError(ErrorMessage error, string path)
    {
        (string id, SandboxErrorKind kind) = error.Code switch
        {
            "PathNotFound" => ("SandboxPathNotFound", SandboxErrorKind.NotFound),
            "PathExists" => ("SandboxPathExists", SandboxErrorKind.AlreadyExists),
            "NotADirectory" => ("SandboxPathNotDirectory", SandboxErrorKind.InvalidArgument),
            "IsADirectory" => ("SandboxPathIsDirectory", SandboxErrorKind.InvalidArgument),
            "DirectoryNotEmpty" => ("DirectoryNotEmpty", SandboxErrorKind.InvalidOperation),
            "InvalidPath" => ("InvalidSandboxPath", SandboxErrorKind.InvalidArgument),
            "PermissionDenied" => ("PermissionDenied", SandboxErrorKind.PermissionDenied),
            _ => ("SandboxFileOperationFailed", SandboxErrorKind.DeviceError),
        };
        return new SandboxException(id, kind, $"{error.Message} (sandbox path '{path}')", path);
    }

    // Sends a write's bytes as FileData within the guest's grants, then the empty frame that ends
    // the file. A source that throws cancels the session in the guest and is reported instead.
    private sealed class FileFeeder(SandboxConnection connection, uint session, FileSource source, FlowWindow window)
    {
        public System.Runtime.ExceptionServices.ExceptionDispatchInfo? Failure { get; private set; }

        public async Task RunAsync(CancellationToken sessionEnd)
        {
            var buffer = new byte[FileChunkSize];
            try
            {
                int n;
                while ((n = await ReadSourceAsync(buffer, sessionEnd).ConfigureAwait(false)) > 0)
                {
                    for (int sent = 0; sent < n;)
                    {
                        int size = await window.TakeAsync(n - sent, sessionEnd).ConfigureAwait(false);
                        if (size == 0)
                        {
                            return;
                        }

                        // The writer copies the bytes before it returns, so the buffer can be reused.
                        await connection._writer.WriteAsync(session, FrameType.FileData, buffer.AsMemory(sent, size),
                            sessionEnd).ConfigureAwait(false);
                        sent += size;
                    }
                }

                await connection._writer.WriteAsync(session, FrameType.FileData, ReadOnlyMemory<byte>.Empty,
                    sessionEnd).ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is OperationCanceledException or IOException)
            {
                // The session ended first, or the connection broke: the reader reports which.
            }
        }

        private async ValueTask<int> ReadSourceAsync(Memory<byte> buffer, CancellationToken sessionEnd)
        {
            try
            {
                return await source(buffer, sessionEnd).ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is not OperationCanceledException || !sessionEnd.IsCancellationRequested)
            {
                Failure = System.Runtime.ExceptionServices.ExceptionDispatchInfo.Capture(ex);
                connection.KillTree(session);
                throw new OperationCanceledException("The source failed.", ex);
            }
        }
    }
}
