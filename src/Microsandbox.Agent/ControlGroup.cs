using System.Collections.Concurrent;
using System.Globalization;

namespace Microsandbox.Agent;

/// <summary>
/// The cgroup (v2) of one command, under <c>/sys/fs/cgroup/msb</c>. msb-exec enters it before the
/// command runs, so every process the command starts is in it, however it forks and whoever adopts
/// it: a double-forked child that PID 1 inherits is no descendant in /proc, but it is still here.
/// The group lists the command's processes and kills them all at once through <c>cgroup.kill</c>.
/// </summary>
internal sealed class ControlGroup
{
    private const string Hierarchy = "/sys/fs/cgroup";
    private const string Parent = Hierarchy + "/msb";
    private static readonly ConcurrentQueue<string> s_busy = new();
    private static long s_next;

    private ControlGroup(string path) => Path = path;

    /// <summary>The group's directory.</summary>
    public string Path { get; }

    /// <summary>A new, empty group; null when the guest has no cgroup2 hierarchy to make it in.</summary>
    public static ControlGroup? Create()
    {
        if (!File.Exists(Hierarchy + "/cgroup.procs"))
        {
            return null;
        }

        string path = $"{Parent}/{Interlocked.Increment(ref s_next).ToString(CultureInfo.InvariantCulture)}";
        try
        {
            Directory.CreateDirectory(path);
            return new ControlGroup(path);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }

    /// <summary>Every process in the group now.</summary>
    public IReadOnlyList<int> Processes()
    {
        try
        {
            return [.. File.ReadAllLines(Path + "/cgroup.procs")
                .Select(line => int.TryParse(line, NumberStyles.None, CultureInfo.InvariantCulture, out int pid)
                    ? pid : 0)
                .Where(pid => pid > 1)];
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            return [];
        }
    }

    /// <summary>SIGKILL to every process of the group, with no window for a fork to slip through.</summary>
    public void Kill()
    {
        try
        {
            using var kill = new FileStream(Path + "/cgroup.kill", FileMode.Open, FileAccess.Write,
                FileShare.ReadWrite, bufferSize: 0);
            kill.Write("1"u8);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            // A kernel before 5.14 has no cgroup.kill; the caller signals the listed processes too.
        }
    }

    /// <summary>
    /// Removes the group when its command's session ends. Processes the command left running in the
    /// background keep it; it goes once they have, at a later <see cref="RemoveEmpty"/>.
    /// </summary>
    public void Release()
    {
        if (!TryRemove(Path))
        {
            s_busy.Enqueue(Path);
        }
    }

    /// <summary>Removes the groups released while busy that have emptied since.</summary>
    public static void RemoveEmpty()
    {
        for (int count = s_busy.Count; count > 0 && s_busy.TryDequeue(out string? path); count--)
        {
            if (!TryRemove(path))
            {
                s_busy.Enqueue(path);
            }
        }
    }

    // rmdir removes a cgroup whatever its control files, and fails (EBUSY) while a process is in it.
    private static bool TryRemove(string path)
    {
        try
        {
            Directory.Delete(path);
            return true;
        }
        catch (DirectoryNotFoundException)
        {
            return true;
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            return false;
        }
    }
}
