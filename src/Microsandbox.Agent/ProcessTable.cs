using System.Globalization;

namespace Microsandbox.Agent;

/// <summary>The guest's processes as /proc lists them, for signalling a command's whole tree.</summary>
internal static class ProcessTable
{
    /// <summary>Every process below <paramref name="root"/>: children, their children, and so on.</summary>
    public static IReadOnlyList<int> DescendantsOf(int root)
    {
        var children = new Dictionary<int, List<int>>();
        foreach (string dir in Directory.EnumerateDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(dir), NumberStyles.None, CultureInfo.InvariantCulture, out int pid)
                || ParentOf(dir) is not int parent)
            {
                continue;
            }

            if (!children.TryGetValue(parent, out List<int>? list))
            {
                children[parent] = list = [];
            }

            list.Add(pid);
        }

        var found = new List<int>();
        var pending = new Queue<int>([root]);
        while (pending.TryDequeue(out int pid))
        {
            foreach (int child in children.GetValueOrDefault(pid) ?? [])
            {
                found.Add(child);
                pending.Enqueue(child);
            }
        }

        return found;
    }

    // The fourth field of /proc/<pid>/stat, after the command name in parentheses (which may
    // itself hold spaces and parentheses, hence the last ')').
    private static int? ParentOf(string dir)
    {
        try
        {
            string stat = File.ReadAllText(Path.Join(dir, "stat"));
            string[] rest = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
            return int.Parse(rest[1], CultureInfo.InvariantCulture);
        }
        catch (Exception ex) when (ex is IOException or FormatException or IndexOutOfRangeException
            or ArgumentOutOfRangeException or UnauthorizedAccessException)
        {
            // The process ended while we looked.
            return null;
        }
    }
}
