using Microsandbox.Protocol;

namespace Microsandbox.Engine;

/// <summary>Named scripts and root patches, put in place before a new sandbox is handed out.</summary>
public sealed partial class SandboxEngine
{
    /// <summary>Where named scripts live in the guest; the folder is put on every command's PATH.</summary>
    public const string ScriptDirectory = "/.msb/scripts";

    /// <summary>The PATH of a command whose image sets none (the agent uses the same).</summary>
    private const string DefaultGuestPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

    /// <summary>
    /// Checks scripts and patches before anything is created: a bad name is <c>InvalidScriptName</c>,
    /// a patch without an absolute guest path or content is <c>InvalidPatch</c>, and a host source that
    /// is not there is <c>HostPathNotFound</c>.
    /// </summary>
    private static void ValidateSetup(SandboxOptions options)
    {
        foreach (var (name, content) in options.Scripts)
        {
            bool valid = name.Length is > 0 and <= 255 && name is not "." and not ".."
                && name.All(c => char.IsAsciiLetterOrDigit(c) || c is '.' or '_' or '-');
            if (!valid)
            {
                throw new SandboxException("InvalidScriptName", SandboxErrorKind.InvalidArgument,
                    $"'{name}' cannot name a script: use letters, digits, '.', '_' and '-' (up to 255).", name);
            }

            if (content is null)
            {
                throw new SandboxException("InvalidScriptName", SandboxErrorKind.InvalidArgument,
                    $"The script '{name}' has no content.", name);
            }
        }

        foreach (SandboxPatch patch in options.Patches)
        {
            patch.Validate();
        }
    }

    /// <summary>Puts the script folder at the end of the command PATH, so image tools win a name clash.</summary>
    private static void AddScriptPath(Dictionary<string, string> environment)
    {
        string path = environment.TryGetValue("PATH", out string? p) && p.Length > 0 ? p : DefaultGuestPath;
        if (!path.Split(':').Contains(ScriptDirectory))
        {
            environment["PATH"] = path + ":" + ScriptDirectory;
        }
    }

    /// <summary>
    /// Puts the script folder back on the PATH of a command that gives its own, in a sandbox that has
    /// scripts: they are to be found by every command, whatever PATH it sets.
    /// </summary>
    private static void KeepScriptPath(
        IReadOnlyDictionary<string, string> sandboxEnvironment, Dictionary<string, string> environment)
    {
        if (sandboxEnvironment.TryGetValue("PATH", out string? own) && own.Split(':').Contains(ScriptDirectory))
        {
            AddScriptPath(environment);
        }
    }

    /// <summary>
    /// Writes the scripts, then applies the patches in order, through the agent of the sandbox that
    /// has just booted, on the boot's own connection while the runtime still holds the sandbox
    /// Starting; the first failure is thrown with the patch it came from.
    /// </summary>
    private static async Task ApplySetupAsync(
        SandboxConnection connection,
        string name,
        IDictionary<string, string> scripts,
        IEnumerable<SandboxPatch> patches,
        IProgress<SandboxMessage>? progress,
        CancellationToken cancellationToken)
    {
        if (!connection.SupportsFiles)
        {
            throw new SandboxException("SandboxFilesNotSupported", SandboxErrorKind.NotInstalled,
                $"The agent of sandbox '{name}' predates file operations, which scripts and "
                + "patches need; install this module's guest assets.", name);
        }

        if (scripts.Count > 0)
        {
            await MakeDirectoryAsync(connection, ScriptDirectory, null, cancellationToken).ConfigureAwait(false);
            foreach (var (script, content) in scripts)
            {
                progress?.Report(new(SandboxMessageLevel.Verbose, $"Writing the script '{script}'."));
                // Without a #! line execve refuses the file; shells would guess, a direct exec would not.
                string text = content.StartsWith("#!", StringComparison.Ordinal) ? content : "#!/bin/sh\n" + content;
                await WriteAsync(connection, $"{ScriptDirectory}/{script}", System.Text.Encoding.UTF8.GetBytes(text),
                    0x1ED, cancellationToken).ConfigureAwait(false);
            }
        }

        foreach (SandboxPatch patch in patches)
        {
            progress?.Report(new(SandboxMessageLevel.Verbose, $"Applying the {patch.Kind} patch of '{patch.Path}'."));
            try
            {
                await ApplyPatchAsync(connection, patch, cancellationToken).ConfigureAwait(false);
            }
            catch (SandboxException ex) when (ex.ErrorId != "SandboxConnectionLost")
            {
                throw new SandboxException("PatchFailed", ex.Kind,
                    $"The {patch.Kind} patch of '{patch.Path}' failed: {ex.Message}", patch, ex);
            }
        }
    }

    /// <summary>
    /// Puts a sandbox's root back as it was made, after a first start whose setup failed part way:
    /// the upper disk goes (the next boot makes a new one), and a disk image root is made again
    /// from its original.
    /// </summary>
    private static async Task ResetRootAsync(SandboxRecord record, CancellationToken cancellationToken)
    {
        if (record.RootFormat is not { } format)
        {
            File.Delete(RootDisks.UpperDiskPath(record.Directory));
            return;
        }

        File.Delete(RootDisks.RootDiskPath(record.Directory, format));
        if (record.BasePath is { } original && File.Exists(original))
        {
            await RootDisks.CreateRootDiskAsync(new DiskImage(original, format, record.RootPartition),
                record.Directory, record.Name, cancellationToken).ConfigureAwait(false);
        }
    }

    private static async Task ApplyPatchAsync(
        SandboxConnection connection, SandboxPatch patch, CancellationToken cancellationToken)
    {
        string path = patch.Path.TrimEnd('/');
        switch (patch.Kind)
        {
            case SandboxPatchKind.WriteFile:
                await MakeParentAsync(connection, path, cancellationToken).ConfigureAwait(false);
                await WriteAsync(connection, path, patch.Content!, patch.Mode, cancellationToken).ConfigureAwait(false);
                break;
            case SandboxPatchKind.AppendFile:
            {
                using var existing = new MemoryStream();
                FileEntry? entry = await connection.StatAsync(path, followLinks: true, cancellationToken)
                    .ConfigureAwait(false);
                if (entry is not null)
                {
                    await connection.ReadFileAsync(path, (data, token) => existing.WriteAsync(data, token),
                        cancellationToken).ConfigureAwait(false);
                }
                else
                {
                    await MakeParentAsync(connection, path, cancellationToken).ConfigureAwait(false);
                }

                existing.Write(patch.Content!);
                await WriteAsync(connection, path, existing.ToArray(), patch.Mode ?? entry?.Mode & 0xFFF,
                    cancellationToken).ConfigureAwait(false);
                break;
            }

            case SandboxPatchKind.MakeDirectory:
                await MakeDirectoryAsync(connection, path.Length == 0 ? "/" : path, patch.Mode, cancellationToken)
                    .ConfigureAwait(false);
                break;
            case SandboxPatchKind.CopyFromHost:
            {
                await MakeParentAsync(connection, path, cancellationToken).ConfigureAwait(false);
                var copy = new FileCopy(new HostSource(), new GuestTree(connection, keepOwner: false),
                    new SandboxCopyOptions { Recurse = true, Force = true });
                SandboxCopyResult result = await copy
                    .RunAsync([Path.GetFullPath(patch.Source!)], path, null, cancellationToken).ConfigureAwait(false);
                if (result.Errors.Count > 0)
                {
                    throw result.Errors[0];
                }

                break;
            }

            case SandboxPatchKind.Remove:
                try
                {
                    await connection.FileOperationAsync(new FileRequest
                    {
                        Op = FileOperation.Remove, Path = path, Recursive = true,
                    }, cancellationToken).ConfigureAwait(false);
                }
                catch (SandboxException ex) when (ex.ErrorId == "SandboxPathNotFound")
                {
                    // Removing what is not there leaves the root as asked.
                }

                break;
        }
    }

    private static async Task MakeParentAsync(
        SandboxConnection connection, string path, CancellationToken cancellationToken)
    {
        int slash = path.LastIndexOf('/');
        if (slash > 0)
        {
            await MakeDirectoryAsync(connection, path[..slash], null, cancellationToken).ConfigureAwait(false);
        }
    }

    private static Task<FileEntry?> MakeDirectoryAsync(
        SandboxConnection connection, string path, int? mode, CancellationToken cancellationToken) =>
        connection.FileOperationAsync(new FileRequest
        {
            Op = FileOperation.MakeDirectory, Path = path, Recursive = true, Mode = mode,
        }, cancellationToken);

    private static Task<FileEntry> WriteAsync(
        SandboxConnection connection, string path, byte[] content, int? mode, CancellationToken cancellationToken)
    {
        int offset = 0;
        return connection.WriteFileAsync(new FileRequest
        {
            Op = FileOperation.Write, Path = path, Overwrite = true, Mode = mode,
        }, (buffer, _) =>
        {
            int count = Math.Min(buffer.Length, content.Length - offset);
            content.AsSpan(offset, count).CopyTo(buffer.Span);
            offset += count;
            return ValueTask.FromResult(count);
        }, cancellationToken);
    }
}
