using System.Globalization;

namespace Microsandbox.Agent;

/// <summary>
/// A user of the guest root, found in its <c>/etc/passwd</c> the way an OCI image config's
/// <c>User</c> names one: <c>name</c>, <c>uid</c>, or either followed by <c>:group</c>.
/// </summary>
internal sealed record GuestUser(string Name, int Uid, int Gid, string Home)
{
    /// <summary>Root, used when a command names no user.</summary>
    public static GuestUser Root { get; } = new("root", 0, 0, "/root");

    /// <summary>
    /// Resolves <paramref name="spec"/> in the root the agent runs in. Returns null and sets
    /// <paramref name="errorCode"/> and <paramref name="message"/> when it cannot.
    /// </summary>
    public static GuestUser? Resolve(
        string? spec, string passwdPath, string groupPath, out string? errorCode, out string? message)
    {
        errorCode = null;
        message = null;
        if (string.IsNullOrEmpty(spec))
        {
            return Root;
        }

        int colon = spec.IndexOf(':', StringComparison.Ordinal);
        string userPart = colon < 0 ? spec : spec[..colon];
        string? groupPart = colon < 0 ? null : spec[(colon + 1)..];
        GuestUser? user = ReadEntries(passwdPath)
            .Where(fields => fields.Length >= 6)
            .Select(fields => TryEntry(fields))
            .FirstOrDefault(entry => entry is not null
                && (entry.Name == userPart || entry.Uid.ToString(CultureInfo.InvariantCulture) == userPart));
        if (user is null)
        {
            errorCode = "UserNotFound";
            message = $"The user '{userPart}' is not in the sandbox's /etc/passwd.";
            return null;
        }

        if (!string.IsNullOrEmpty(groupPart))
        {
            string[]? group = ReadEntries(groupPath).FirstOrDefault(fields => fields.Length >= 3
                && (fields[0] == groupPart || fields[2] == groupPart));
            bool numeric = int.TryParse(groupPart, NumberStyles.None, CultureInfo.InvariantCulture, out int gid);
            int? wanted = group is not null && int.TryParse(group[2], CultureInfo.InvariantCulture, out int found)
                ? found
                : numeric ? gid : null;
            if (wanted is null)
            {
                errorCode = "UserNotFound";
                message = $"The group '{groupPart}' is not in the sandbox's /etc/group.";
                return null;
            }

            if (wanted != user.Gid)
            {
                errorCode = "UserGroupNotSupported";
                message = $"The group '{groupPart}' is not the primary group of '{user.Name}' ({user.Gid}); "
                    + "commands run with the user's own primary group.";
                return null;
            }
        }

        return user;
    }

    /// <summary>The user's groups: the primary one and every group of /etc/group naming the user.</summary>
    public IReadOnlyList<int> Groups(string groupPath)
    {
        var groups = new List<int> { Gid };
        foreach (string[] fields in ReadEntries(groupPath))
        {
            if (fields.Length >= 4 && fields[3].Split(',').Contains(Name)
                && int.TryParse(fields[2], NumberStyles.None, CultureInfo.InvariantCulture, out int gid)
                && !groups.Contains(gid))
            {
                groups.Add(gid);
            }
        }

        return groups;
    }

    private static GuestUser? TryEntry(string[] fields) =>
        int.TryParse(fields[2], NumberStyles.None, CultureInfo.InvariantCulture, out int uid)
        && int.TryParse(fields[3], NumberStyles.None, CultureInfo.InvariantCulture, out int gid)
            ? new GuestUser(fields[0], uid, gid, string.IsNullOrEmpty(fields[5]) ? "/" : fields[5])
            : null;

    private static IEnumerable<string[]> ReadEntries(string path)
    {
        if (!File.Exists(path))
        {
            yield break;
        }

        foreach (string line in File.ReadLines(path))
        {
            if (line.Length > 0 && line[0] != '#')
            {
                yield return line.Split(':');
            }
        }
    }
}
