namespace Microsandbox.Engine;

/// <summary>
/// The folder that holds all state: <c>$MSB_HOME</c>, or <c>~/.microsandbox</c>. Any process that
/// opens the same home sees the same sandboxes.
/// </summary>
public sealed class SandboxHome
{
    /// <summary>Opens (and creates, owner-only) the home at <paramref name="root"/>.</summary>
    public SandboxHome(string root)
    {
        ArgumentException.ThrowIfNullOrEmpty(root);
        Root = Path.GetFullPath(root);
        CreatePrivateDirectory(Root);
        CreatePrivateDirectory(SandboxesDirectory);
        CreatePrivateDirectory(CacheDirectory);
    }

    /// <summary>The home named by <c>MSB_HOME</c>, or the default under the user's profile.</summary>
    public static SandboxHome FromEnvironment()
    {
        string? configured = Environment.GetEnvironmentVariable("MSB_HOME");
        return new SandboxHome(string.IsNullOrEmpty(configured)
            ? Path.Join(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".microsandbox")
            : configured);
    }

    /// <summary>The home folder.</summary>
    public string Root { get; }

    /// <summary>The SQLite state database.</summary>
    public string DatabasePath => Path.Join(Root, "state.db");

    /// <summary>One folder per sandbox, named by its id.</summary>
    public string SandboxesDirectory => Path.Join(Root, "sandboxes");

    /// <summary>Host facts worth keeping (the accelerator probe) and, later, images and layers.</summary>
    public string CacheDirectory => Path.Join(Root, "cache");

    /// <summary>
    /// The lock file of the sandbox named <paramref name="name"/>: by name, not by id, so creating
    /// a name and replacing it take the same lock. Names may hold any character, so the file is
    /// named by a digest of the name.
    /// </summary>
    public string SandboxLockPath(string name)
    {
        byte[] digest = System.Security.Cryptography.SHA256.HashData(System.Text.Encoding.UTF8.GetBytes(name));
        return Path.Join(Root, "locks", Convert.ToHexString(digest, 0, 16).ToLowerInvariant() + ".lock");
    }

    /// <summary>The folder of one sandbox.</summary>
    public string SandboxDirectory(string id) => Path.Join(SandboxesDirectory, id);

    /// <summary>Creates a folder only its owner can enter.</summary>
    public static void CreatePrivateDirectory(string path)
    {
        if (OperatingSystem.IsWindows())
        {
            Directory.CreateDirectory(path);
            return;
        }

        Directory.CreateDirectory(path, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
    }
}
