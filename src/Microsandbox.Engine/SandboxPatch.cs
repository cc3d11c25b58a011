using System.Text;

namespace Microsandbox.Engine;

/// <summary>What a <see cref="SandboxPatch"/> does to the sandbox's root.</summary>
public enum SandboxPatchKind
{
    /// <summary>Writes a file, replacing one that is there; missing parent folders are made.</summary>
    WriteFile,

    /// <summary>Appends to a file, creating it when it is missing.</summary>
    AppendFile,

    /// <summary>Makes a folder and any missing parents (as mkdir -p).</summary>
    MakeDirectory,

    /// <summary>Copies a host file or folder (with everything in it), modes and times kept.</summary>
    CopyFromHost,

    /// <summary>Removes a file, link or folder with everything in it; a missing path is not an error.</summary>
    Remove,
}

/// <summary>
/// One change to a new sandbox's root, applied in order before New-Sandbox returns and so before
/// any command can see the root without it. Paths in the guest are absolute.
/// </summary>
public sealed record SandboxPatch(SandboxPatchKind Kind, string Path)
{
    /// <summary>The bytes to write or append.</summary>
    public byte[]? Content { get; init; }

    /// <summary>Permission bits for a written file or a made folder (such as 0o755); null keeps the default.</summary>
    public int? Mode { get; init; }

    /// <summary>The host file or folder a <see cref="SandboxPatchKind.CopyFromHost"/> patch copies.</summary>
    public string? Source { get; init; }

    /// <summary>
    /// Checks the patch before anything is created: a guest path that is not absolute, missing content
    /// or source, or a mode that is not permission bits is <c>InvalidPatch</c> (with
    /// <paramref name="target"/>, else the patch, as the target); a host source that is not there is
    /// <c>HostPathNotFound</c>.
    /// </summary>
    public void Validate(object? target = null)
    {
        target ??= this;
        if (string.IsNullOrEmpty(Path) || Path[0] != '/' || Path.Contains('\0'))
        {
            throw Invalid($"The {Kind} patch path '{Path}' is not an absolute guest path.", target);
        }

        if (Path.TrimEnd('/').Length == 0 && Kind != SandboxPatchKind.MakeDirectory)
        {
            throw Invalid($"A {Kind} patch cannot apply to the root folder itself.", target);
        }

        if (Mode is { } mode && (mode < 0 || mode > 0xFFF))
        {
            throw Invalid($"The mode {Convert.ToString(mode, 8)} of the patch of '{Path}' is not permission bits "
                + "(0 to 7777 octal).", target);
        }

        if (Kind is SandboxPatchKind.WriteFile or SandboxPatchKind.AppendFile && Content is null)
        {
            throw Invalid($"The {Kind} patch of '{Path}' has no content.", target);
        }

        if (Kind == SandboxPatchKind.CopyFromHost)
        {
            if (string.IsNullOrEmpty(Source))
            {
                throw Invalid($"The copy patch of '{Path}' names no host source.", target);
            }

            if (!File.Exists(Source) && !System.IO.Directory.Exists(Source))
            {
                throw new SandboxException("HostPathNotFound", SandboxErrorKind.NotFound,
                    $"'{Source}' does not exist on the host.", Source);
            }
        }
    }

    private static SandboxException Invalid(string message, object target) =>
        new("InvalidPatch", SandboxErrorKind.InvalidArgument, message, target);

    /// <summary>Writes UTF-8 text to a file.</summary>
    public static SandboxPatch Write(string path, string text, int? mode = null) =>
        new(SandboxPatchKind.WriteFile, path) { Content = Encoding.UTF8.GetBytes(text), Mode = mode };

    /// <summary>Appends UTF-8 text to a file.</summary>
    public static SandboxPatch Append(string path, string text) =>
        new(SandboxPatchKind.AppendFile, path) { Content = Encoding.UTF8.GetBytes(text) };

    /// <summary>Makes a folder.</summary>
    public static SandboxPatch Directory(string path, int? mode = null) =>
        new(SandboxPatchKind.MakeDirectory, path) { Mode = mode };

    /// <summary>Copies a host file or folder to <paramref name="path"/>.</summary>
    public static SandboxPatch Copy(string source, string path) =>
        new(SandboxPatchKind.CopyFromHost, path) { Source = source };

    /// <summary>Removes a path.</summary>
    public static SandboxPatch Remove(string path) => new(SandboxPatchKind.Remove, path);
}
