using Microsandbox.Protocol;

namespace Microsandbox.Engine;

/// <summary>A sandbox as the source or the destination of a copy, through one connection.</summary>
internal sealed class GuestTree(SandboxConnection connection, bool keepOwner) : ICopySource, ICopyDestination
{
    // The top of a copy follows a link, as the user named it; inside a tree links are copied as links.
    public Task<FileEntry?> StatAsync(string path, CancellationToken cancellationToken) =>
        connection.StatAsync(path, followLinks: true, cancellationToken);

    public Task<IReadOnlyList<FileEntry>> ListAsync(string path, CancellationToken cancellationToken) =>
        connection.ListAsync(path, cancellationToken);

    public Task ReadAsync(string path, FileSink sink, CancellationToken cancellationToken) =>
        connection.ReadFileAsync(path, sink, cancellationToken);

    public void BeginItem(string path)
    {
        // Inside the guest a link may point anywhere: it is the guest's own file system.
    }

    public Task CreateDirectoryAsync(string path, CancellationToken cancellationToken) =>
        connection.FileOperationAsync(new FileRequest
        {
            Op = FileOperation.MakeDirectory, Path = path, Recursive = true,
        }, cancellationToken);

    public Task FinishDirectoryAsync(string path, FileEntry entry, CancellationToken cancellationToken) =>
        connection.FileOperationAsync(Attributes(FileOperation.SetAttributes, path, entry), cancellationToken);

    public Task WriteFileAsync(string path, FileEntry entry, FileSource source, CancellationToken cancellationToken)
    {
        FileRequest request = Attributes(FileOperation.Write, path, entry);
        return connection.WriteFileAsync(request, source, cancellationToken);
    }

    public Task CreateSymlinkAsync(string path, FileEntry entry, CancellationToken cancellationToken)
    {
        FileRequest request = Attributes(FileOperation.Symlink, path, entry);
        return connection.FileOperationAsync(new FileRequest
        {
            Op = request.Op, Path = path, Target = entry.Target, Overwrite = true, Uid = request.Uid,
            Gid = request.Gid,
        }, cancellationToken);
    }

    public string Join(string directory, string name) => directory == "/" ? "/" + name : directory + "/" + name;

    public string NameOf(string path) => path == "/" ? "root" : path[(path.LastIndexOf('/') + 1)..];

    public string ParentOf(string path)
    {
        int slash = path.LastIndexOf('/');
        return slash <= 0 ? "/" : path[..slash];
    }

    public SandboxException NotFound(string path) =>
        new("SandboxPathNotFound", SandboxErrorKind.NotFound, $"'{path}' does not exist in the sandbox.", path);

    private FileRequest Attributes(string op, string path, FileEntry entry) => new()
    {
        Op = op,
        Path = path,
        Overwrite = true,
        Mode = entry.Mode,
        ModifiedSeconds = entry.ModifiedSeconds,
        ModifiedNanoseconds = entry.ModifiedNanoseconds,
        Uid = keepOwner ? entry.Uid : null,
        Gid = keepOwner ? entry.Gid : null,
    };
}

/// <summary>Host files and folders as the source of a copy into a sandbox.</summary>
internal sealed class HostSource : ICopySource
{
    private static readonly EnumerationOptions Everything = new() { AttributesToSkip = 0, IgnoreInaccessible = false };

    public Task<FileEntry?> StatAsync(string path, CancellationToken cancellationToken)
    {
        // The user named this path: a link is followed, as cp and Copy-Item follow one.
        FileSystemInfo info = Directory.Exists(path) ? new DirectoryInfo(path) : new FileInfo(path);
        return Task.FromResult(info.Exists ? HostEntries.Of(info, follow: true) : null);
    }

    public Task<IReadOnlyList<FileEntry>> ListAsync(string path, CancellationToken cancellationToken)
    {
        try
        {
            IReadOnlyList<FileEntry> entries = new DirectoryInfo(path).EnumerateFileSystemInfos("*", Everything)
                .Select(info => HostEntries.Of(info, follow: false)).ToList();
            return Task.FromResult(entries);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw HostEntries.Failure(path, ex);
        }
    }

    public async Task ReadAsync(string path, FileSink sink, CancellationToken cancellationToken)
    {
        FileStream file;
        try
        {
            file = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite, 0, useAsync: true);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw HostEntries.Failure(path, ex);
        }

        await using (file.ConfigureAwait(false))
        {
            var buffer = new byte[128 * 1024];
            int n;
            while ((n = await file.ReadAsync(buffer, cancellationToken).ConfigureAwait(false)) > 0)
            {
                await sink(buffer.AsMemory(0, n), cancellationToken).ConfigureAwait(false);
            }
        }
    }

    public string Join(string directory, string name) => Path.Join(directory, name);

    public string NameOf(string path) => Path.GetFileName(Path.TrimEndingDirectorySeparator(path));

    public SandboxException NotFound(string path) => HostEntries.NotFound(path);
}

/// <summary>
/// A host folder as the destination of a copy out of a sandbox, whose content is untrusted: no
/// write goes through a link, and no link is made that leads outside the item being copied.
/// </summary>
internal sealed class HostDestination(bool force) : ICopyDestination
{
    private string _item = "";

    public Task<FileEntry?> StatAsync(string path, CancellationToken cancellationToken)
    {
        FileSystemInfo info = Directory.Exists(path) ? new DirectoryInfo(path) : new FileInfo(path);
        return Task.FromResult(info.Exists ? HostEntries.Of(info, follow: true) : null);
    }

    public void BeginItem(string path) => _item = Path.GetFullPath(path);

    public Task CreateDirectoryAsync(string path, CancellationToken cancellationToken)
    {
        CheckInside(path, final: true);
        try
        {
            if (!Directory.Exists(path))
            {
                Directory.CreateDirectory(path);
            }
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw HostEntries.Failure(path, ex);
        }

        return Task.CompletedTask;
    }

    public Task FinishDirectoryAsync(string path, FileEntry entry, CancellationToken cancellationToken)
    {
        CheckInside(path, final: true);
        try
        {
            SetMode(path, entry);
            Directory.SetLastWriteTimeUtc(path, HostEntries.TimeOf(entry));
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw HostEntries.Failure(path, ex);
        }

        return Task.CompletedTask;
    }

    public async Task WriteFileAsync(
        string path, FileEntry entry, FileSource source, CancellationToken cancellationToken)
    {
        CheckInside(path, final: false);
        FileStream file;
        try
        {
            var existing = new FileInfo(path);
            if (existing.LinkTarget is not null || (force && existing.Exists))
            {
                // A link is replaced, never written through.
                existing.Delete();
            }

            // Created private and given its mode only once written.
            var options = new FileStreamOptions
            {
                Mode = FileMode.Create, Access = FileAccess.Write, Share = FileShare.None, BufferSize = 0,
                Options = FileOptions.Asynchronous,
            };
            if (!OperatingSystem.IsWindows())
            {
                options.UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite;
            }

            file = new FileStream(path, options);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw HostEntries.Failure(path, ex);
        }

        await using (file.ConfigureAwait(false))
        {
            var buffer = new byte[128 * 1024];
            int n;
            while ((n = await source(buffer, cancellationToken).ConfigureAwait(false)) > 0)
            {
                await file.WriteAsync(buffer.AsMemory(0, n), cancellationToken).ConfigureAwait(false);
            }
        }

        SetMode(path, entry);
        File.SetLastWriteTimeUtc(path, HostEntries.TimeOf(entry));
    }

    public Task CreateSymlinkAsync(string path, FileEntry entry, CancellationToken cancellationToken)
    {
        CheckInside(path, final: false);
        string target = entry.Target ?? "";
        if (!StaysInside(path, target))
        {
            throw new SandboxException("PathOutsideDestination", SandboxErrorKind.PermissionDenied,
                $"The link '{path}' would point to '{target}', outside '{_item}'; it was not created.", path);
        }

        try
        {
            if (File.Exists(path) || new FileInfo(path).LinkTarget is not null)
            {
                File.Delete(path);
            }

            File.CreateSymbolicLink(path, target);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw HostEntries.Failure(path, ex);
        }

        return Task.CompletedTask;
    }

    public string Join(string directory, string name) => Path.Join(directory, name);

    public string ParentOf(string path) =>
        Path.GetDirectoryName(Path.TrimEndingDirectorySeparator(Path.GetFullPath(path))) ?? "/";

    public SandboxException NotFound(string path) => HostEntries.NotFound(path);

    // Host files get the guest's permission bits but never setuid, setgid or sticky: a sandbox
    // must not hand the host user a set-id program.
    private static void SetMode(string path, FileEntry entry)
    {
        if (!OperatingSystem.IsWindows())
        {
            File.SetUnixFileMode(path, (UnixFileMode)(entry.Mode & 0x1FF));
        }
    }

    // Every directory from the copied item down to the path must be a real directory, not a
    // link: a link there would carry the write somewhere else. Only this process writes below
    // the item during the copy, and it creates no link it has not checked, so the check holds.
    private void CheckInside(string path, bool final)
    {
        string full = Path.GetFullPath(path);
        string relative = Path.GetRelativePath(_item, full);
        if (relative == ".")
        {
            relative = "";
        }

        if (relative.StartsWith("..", StringComparison.Ordinal) || Path.IsPathRooted(relative))
        {
            throw Outside(path);
        }

        string current = _item;
        string[] parts = relative.Length == 0 ? [] : relative.Split('/');
        int check = final ? parts.Length : parts.Length - 1;
        for (int i = -1; i < check; i++)
        {
            current = i < 0 ? _item : Path.Join(current, parts[i]);
            var info = new DirectoryInfo(current);
            if (info.LinkTarget is not null)
            {
                throw Outside(path);
            }
        }
    }

    // A link may only lead to a place inside the copied item: its target is relative and goes up
    // no further than the link's own depth below the item, and only at its start, so no link
    // it passes through afterwards can carry it back up. A link that is the item itself sits
    // beside it, not in it: every relative target resolves from the item's parent, outside.
    private bool StaysInside(string path, string target)
    {
        string relative = Path.GetRelativePath(_item, Path.GetFullPath(path));
        if (target.Length == 0 || target.StartsWith('/') || relative == ".")
        {
            return false;
        }

        int depth = relative.Split('/').Length - 1;
        bool leading = true;
        int up = 0;
        foreach (string part in target.Split('/'))
        {
            if (part == "..")
            {
                if (!leading || ++up > depth)
                {
                    return false;
                }
            }
            else if (part is not ("" or "."))
            {
                leading = false;
            }
        }

        return true;
    }

    private SandboxException Outside(string path) =>
        new("PathOutsideDestination", SandboxErrorKind.PermissionDenied,
            $"'{path}' would be written through a link, outside '{_item}'; nothing was written there.", path);
}

/// <summary>Host file facts in the form the guest reports them, and host failures as engine errors.</summary>
internal static class HostEntries
{
    public static FileEntry Of(FileSystemInfo info, bool follow)
    {
        if (follow && info.LinkTarget is not null && info.ResolveLinkTarget(returnFinalTarget: true) is { } final)
        {
            info = final;
        }

        string type = info.LinkTarget is not null ? FileEntryType.Symlink
            : info is DirectoryInfo ? FileEntryType.Directory
            : info.Attributes.HasFlag(FileAttributes.Device) ? FileEntryType.Other
            : FileEntryType.File;
        long ticks = info.LastWriteTimeUtc.Ticks - DateTime.UnixEpoch.Ticks;
        return new FileEntry
        {
            Name = info.Name,
            Type = type,
            Mode = (int)info.UnixFileMode,
            Size = info is FileInfo file && type == FileEntryType.File ? file.Length : 0,
            ModifiedSeconds = Math.DivRem(ticks, TimeSpan.TicksPerSecond, out long rest),
            ModifiedNanoseconds = (int)rest * 100,
            Target = info.LinkTarget,
        };
    }

    public static DateTime TimeOf(FileEntry entry) =>
        DateTime.UnixEpoch.AddSeconds(entry.ModifiedSeconds).AddTicks(entry.ModifiedNanoseconds / 100);

    public static SandboxException NotFound(string path) =>
        new("HostPathNotFound", SandboxErrorKind.NotFound, $"'{path}' does not exist on the host.", path);

    public static SandboxException Failure(string path, Exception ex) => ex switch
    {
        FileNotFoundException or DirectoryNotFoundException => NotFound(path),
        UnauthorizedAccessException =>
            new("HostPermissionDenied", SandboxErrorKind.PermissionDenied, ex.Message, path, ex),
        _ => new("HostFileOperationFailed", SandboxErrorKind.ResourceUnavailable, ex.Message, path, ex),
    };
}
