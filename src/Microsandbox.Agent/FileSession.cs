using System.Text;
using System.Threading.Channels;
using Microsandbox.Protocol;

namespace Microsandbox.Agent;

/// <summary>
/// One file operation asked by the host: done with the agent's own calls, not a shell or tar,
/// which an image may not have. Every session is flow-controlled (protocol 6.5) in both directions.
/// </summary>
internal sealed class FileSession : IDisposable
{
    private const int ChunkSize = 128 * 1024;

    // Listings go in frames of about this much JSON, well under the initial window, so a frame
    // never waits for credit the host could only grant after receiving it.
    private const int EntriesFrameBytes = 48 * 1024;

    private readonly uint _id;
    private readonly FileRequest _request;
    private readonly FrameWriter _writer;
    private readonly FlowWindow _output = new();
    private readonly CancellationTokenSource _cancel = new();

    // Bounded by the window the agent grants: the host sends no more than that ahead.
    private readonly Channel<ReadOnlyMemory<byte>> _input = Channel.CreateUnbounded<ReadOnlyMemory<byte>>();

    public FileSession(uint id, FileRequest request, FrameWriter writer)
    {
        _id = id;
        _request = request;
        _writer = writer;
    }

    /// <summary>Does the operation and ends the session with <c>FileResult</c> or <c>Error</c>.</summary>
    public async Task RunAsync()
    {
        FileResult result;
        try
        {
            string path = _request.Path;
            if (path.Length == 0 || path[0] != '/' || path.Contains('\0', StringComparison.Ordinal))
            {
                throw new FileFailure("InvalidPath", $"'{path}' is not an absolute guest path.");
            }

            result = _request.Op switch
            {
                FileOperation.Stat => new FileResult { Entry = StatOrFail(path, _request.FollowLinks) },
                FileOperation.List => await ListAsync(path).ConfigureAwait(false),
                FileOperation.Read => await ReadAsync(path).ConfigureAwait(false),
                FileOperation.Write => await WriteAsync(path).ConfigureAwait(false),
                FileOperation.MakeDirectory => MakeDirectory(path),
                FileOperation.Symlink => Symlink(path),
                FileOperation.Remove => Remove(path),
                FileOperation.SetAttributes => SetAttributes(path),
                _ => throw new FileFailure("UnknownFileOperation", $"'{_request.Op}' is not a file operation."),
            };
        }
        catch (Exception ex) when (ex is FileFailure or IOException or UnauthorizedAccessException
            or OperationCanceledException)
        {
            await _writer.WriteAsync(_id, FrameType.Error, ToError(ex)).ConfigureAwait(false);
            return;
        }

        await _writer.WriteAsync(_id, FrameType.FileResult, result).ConfigureAwait(false);
    }

    /// <summary>Queues bytes for a write; an empty chunk ends the file.</summary>
    public void QueueData(ReadOnlyMemory<byte> data) => _input.Writer.TryWrite(data);

    /// <summary>Adds output credit the host granted.</summary>
    public void Grant(int bytes) => _output.Grant(bytes);

    /// <summary>The host gave up (its client left): stop where the operation is.</summary>
    public void Cancel()
    {
        _cancel.Cancel();
        _output.Close();
        _input.Writer.TryComplete();
    }

    public void Dispose() => _cancel.Dispose();

    private static ErrorMessage ToError(Exception ex) => ex switch
    {
        FileFailure f => new ErrorMessage { Code = f.Code, Message = f.Message },
        FileNotFoundException or DirectoryNotFoundException =>
            new ErrorMessage { Code = "PathNotFound", Message = ex.Message },
        UnauthorizedAccessException => new ErrorMessage { Code = "PermissionDenied", Message = ex.Message },
        OperationCanceledException => new ErrorMessage { Code = "Cancelled", Message = "The host cancelled." },
        _ => new ErrorMessage { Code = "FileOperationFailed", Message = ex.Message },
    };

    private static FileEntry StatOrFail(string path, bool followLinks) =>
        Native.Stat(path, followLinks, out int errno) ?? throw (errno is Native.ENOENT or Native.ENOTDIR
            ? new FileFailure("PathNotFound", $"'{path}' does not exist in the guest.")
            : new IOException($"Cannot stat '{path}': errno {errno}."));

    private async Task<FileResult> ListAsync(string path)
    {
        FileEntry directory = StatOrFail(path, followLinks: true);
        if (directory.Type != FileEntryType.Directory)
        {
            throw new FileFailure("NotADirectory", $"'{path}' is not a directory.");
        }

        var options = new EnumerationOptions { AttributesToSkip = 0, IgnoreInaccessible = false };
        var batch = new List<FileEntry>();
        int batchBytes = 0;
        foreach (string child in Directory.EnumerateFileSystemEntries(path, "*", options))
        {
            // A file removed since the directory was read is simply not listed.
            if (Native.Stat(child, followLinks: false, out _) is not { } entry)
            {
                continue;
            }

            batch.Add(entry);
            batchBytes += 160 + (Encoding.UTF8.GetByteCount(entry.Name) + (entry.Target?.Length ?? 0)) * 6;
            if (batchBytes >= EntriesFrameBytes)
            {
                await SendEntriesAsync(batch).ConfigureAwait(false);
                batch.Clear();
                batchBytes = 0;
            }
        }

        if (batch.Count > 0)
        {
            await SendEntriesAsync(batch).ConfigureAwait(false);
        }

        return new FileResult { Entry = directory };
    }

    private async Task SendEntriesAsync(IReadOnlyList<FileEntry> entries)
    {
        byte[] payload = ProtocolJson.Serialize(new FileEntries { Entries = entries });
        await TakeCreditAsync(payload.Length).ConfigureAwait(false);
        await _writer.WriteAsync(_id, FrameType.FileEntries, payload).ConfigureAwait(false);
    }

    // A control frame cannot be split to fit the credit, so it waits for all of it.
    private async Task TakeCreditAsync(int bytes)
    {
        for (int left = bytes; left > 0;)
        {
            int taken = await _output.TakeAsync(left, _cancel.Token).ConfigureAwait(false);
            if (taken == 0)
            {
                throw new OperationCanceledException();
            }

            left -= taken;
        }
    }

    private async Task<FileResult> ReadAsync(string path)
    {
        FileEntry entry = StatOrFail(path, followLinks: true);
        if (entry.Type == FileEntryType.Directory)
        {
            throw new FileFailure("IsADirectory", $"'{path}' is a directory.");
        }

        using var file = new FileStream(path, new FileStreamOptions
        {
            Mode = FileMode.Open, Access = FileAccess.Read, Share = FileShare.ReadWrite, BufferSize = 0,
        });
        await SendEntriesAsync([entry]).ConfigureAwait(false);
        var buffer = new byte[ChunkSize];
        int n;
        while ((n = await file.ReadAsync(buffer, _cancel.Token).ConfigureAwait(false)) > 0)
        {
            for (int sent = 0; sent < n;)
            {
                int granted = await _output.TakeAsync(n - sent, _cancel.Token).ConfigureAwait(false);
                if (granted == 0)
                {
                    throw new OperationCanceledException();
                }

                await _writer.WriteAsync(_id, FrameType.FileData, buffer.AsMemory(sent, granted))
                    .ConfigureAwait(false);
                sent += granted;
            }
        }

        return new FileResult { Entry = entry };
    }

    private async Task<FileResult> WriteAsync(string path)
    {
        if (Native.Stat(path, followLinks: true, out _) is { } existing)
        {
            if (existing.Type == FileEntryType.Directory)
            {
                throw new FileFailure("IsADirectory", $"'{path}' is a directory.");
            }

            if (!_request.Overwrite)
            {
                throw new FileFailure("PathExists", $"'{path}' already exists.");
            }
        }

        var options = new FileStreamOptions
        {
            Mode = FileMode.Create, Access = FileAccess.Write, Share = FileShare.None, BufferSize = 0,
            UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite,
        };
        await using (var file = new FileStream(path, options))
        {
            bool ended = false;
            await foreach (ReadOnlyMemory<byte> data in _input.Reader.ReadAllAsync(_cancel.Token)
                .ConfigureAwait(false))
            {
                if (data.IsEmpty)
                {
                    ended = true;
                    break;
                }

                await file.WriteAsync(data, _cancel.Token).ConfigureAwait(false);

                // The bytes are in the file: the host may send as many more.
                await _writer.WriteAsync(_id, FrameType.Window, new WindowUpdate { Bytes = data.Length })
                    .ConfigureAwait(false);
            }

            if (!ended)
            {
                throw new OperationCanceledException();
            }
        }

        // Written as 0600 and given its mode only now, so nobody reads a half-written file
        // through bits meant for the finished one.
        ApplyAttributes(path, _request.Mode ?? 0x1A4, link: false);
        return new FileResult { Entry = StatOrFail(path, followLinks: true) };
    }

    private FileResult MakeDirectory(string path)
    {
        FileEntry? existing = Native.Stat(path, followLinks: true, out _);
        if (existing is not null)
        {
            if (existing.Type != FileEntryType.Directory || !_request.Recursive)
            {
                throw new FileFailure("PathExists", $"'{path}' already exists.");
            }
        }
        else
        {
            string parent = Path.GetDirectoryName(path.TrimEnd('/')) ?? "/";
            if (!_request.Recursive && Native.Stat(parent, followLinks: true, out _) is null)
            {
                throw new FileFailure("PathNotFound", $"The parent directory '{parent}' does not exist.");
            }

            Directory.CreateDirectory(path);
        }

        ApplyAttributes(path, _request.Mode ?? (existing is null ? 0x1ED : null), link: false);
        return new FileResult { Entry = StatOrFail(path, followLinks: true) };
    }

    private FileResult Symlink(string path)
    {
        if (_request.Target is not { Length: > 0 } target)
        {
            throw new FileFailure("InvalidPath", "A symbolic link needs a target.");
        }

        if (Native.Stat(path, followLinks: false, out _) is { } existing)
        {
            if (!_request.Overwrite || existing.Type == FileEntryType.Directory)
            {
                throw new FileFailure("PathExists", $"'{path}' already exists.");
            }

            File.Delete(path);
        }

        File.CreateSymbolicLink(path, target);
        ApplyAttributes(path, null, link: true);
        return new FileResult { Entry = StatOrFail(path, followLinks: false) };
    }

    private FileResult Remove(string path)
    {
        FileEntry entry = StatOrFail(path, followLinks: false);
        if (entry.Type != FileEntryType.Directory)
        {
            File.Delete(path);
        }
        else if (_request.Recursive)
        {
            // Links inside are removed, never followed.
            Directory.Delete(path, recursive: true);
        }
        else if (Directory.EnumerateFileSystemEntries(path).Any())
        {
            throw new FileFailure("DirectoryNotEmpty", $"The directory '{path}' is not empty.");
        }
        else
        {
            Directory.Delete(path);
        }

        return new FileResult();
    }

    private FileResult SetAttributes(string path)
    {
        FileEntry entry = StatOrFail(path, followLinks: false);
        bool link = entry.Type == FileEntryType.Symlink;
        ApplyAttributes(path, _request.Mode, link);
        return new FileResult { Entry = StatOrFail(path, followLinks: false) };
    }

    // Owner before mode: chown clears the setuid and setgid bits the mode may set.
    private void ApplyAttributes(string path, int? mode, bool link)
    {
        if (_request.Uid is not null || _request.Gid is not null)
        {
            Native.SetOwner(path, _request.Uid ?? -1, _request.Gid ?? -1);
        }

        if (mode is { } bits && !link)
        {
            File.SetUnixFileMode(path, (UnixFileMode)(bits & 0xFFF));
        }

        if (_request.ModifiedSeconds is { } seconds)
        {
            Native.SetModified(path, seconds, _request.ModifiedNanoseconds);
        }
    }

    /// <summary>A failure with its protocol code.</summary>
    private sealed class FileFailure(string code, string message) : Exception(message)
    {
        public string Code { get; } = code;
    }
}
