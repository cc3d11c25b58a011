namespace Microsandbox.Engine;

/// <summary>
/// Advisory locks held through an open file, across processes: on Unix an open that shares
/// nothing is an exclusive flock and a read-only open that shares is a shared one; on Windows
/// they are sharing locks. The system drops the lock when its holder dies, so a killed pwsh
/// never leaves a lock behind.
/// </summary>
internal static class LockFile
{
    /// <summary>
    /// Takes the lock at <paramref name="path"/> (creating the file), or returns null at once when
    /// a holder in the way has it: another process, or another open in this one.
    /// </summary>
    public static FileStream? TryTake(string path, bool exclusive)
    {
        try
        {
            if (exclusive)
            {
                return new FileStream(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None,
                    bufferSize: 0);
            }

            if (!File.Exists(path))
            {
                // Created by a write open first: a read-only open cannot create the file.
                using (new FileStream(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.ReadWrite,
                    bufferSize: 0))
                {
                }
            }

            return new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite, bufferSize: 0);
        }
        catch (IOException e) when (IsHeldElsewhere(e))
        {
            return null;
        }
    }

    /// <summary>
    /// Takes the lock at <paramref name="path"/>, waiting for the holders in the way; says
    /// <paramref name="waitMessage"/> once through <paramref name="progress"/> when it has to wait.
    /// </summary>
    public static async Task<FileStream> TakeAsync(
        string path,
        bool exclusive,
        string waitMessage,
        IProgress<SandboxMessage>? progress,
        CancellationToken cancellationToken)
    {
        bool told = false;
        while (true)
        {
            cancellationToken.ThrowIfCancellationRequested();
            if (TryTake(path, exclusive) is { } file)
            {
                return file;
            }

            if (!told)
            {
                told = true;
                progress?.Report(new(SandboxMessageLevel.Verbose, waitMessage));
            }

            await Task.Delay(50, cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>Whether opening a lock file failed because another holder has it.</summary>
    public static bool IsHeldElsewhere(IOException e) =>
        e is not (FileNotFoundException or DirectoryNotFoundException or PathTooLongException)
        && e.HResult is 11 or 35 // EWOULDBLOCK on Linux and on macOS
            or unchecked((int)0x80070020) or unchecked((int)0x80070021); // sharing, lock violation
}
